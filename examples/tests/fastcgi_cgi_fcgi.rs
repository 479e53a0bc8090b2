//! The `echo` program on FastCGI driven by libfcgi's `cgi-fcgi` (Debian's libfcgi-bin): one
//! CGI-style request from its environment and stdin, the raw CGI response on its stdout, the
//! app status as its exit code; and `FCGI_WEB_SERVER_ADDRS` deciding whether it may connect.

mod common;

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ECHO, free_port, sha256_hex};

const CGI_FCGI: &str = "/usr/bin/cgi-fcgi";

/// The echo program, killed when dropped.
struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Echo on FastCGI at `port`, with `FCGI_WEB_SERVER_ADDRS` set to `addrs` when given.
fn echo(port: u16, addrs: Option<&str>) -> Backend {
    let mut command = Command::new(ECHO);
    command
        .args(["--fastcgi", &format!("127.0.0.1:{port}")])
        .env_remove("FCGI_WEB_SERVER_ADDRS")
        .stderr(Stdio::null());
    if let Some(addrs) = addrs {
        command.env("FCGI_WEB_SERVER_ADDRS", addrs);
    }
    let backend = Backend(command.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the backend did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    backend
}

/// Runs `cgi-fcgi -bind -connect 127.0.0.1:PORT` with only `vars` in its environment and
/// `stdin`, within 15 seconds.
fn cgi_fcgi(port: u16, vars: &[(&str, &str)], stdin: &[u8]) -> Output {
    assert!(
        std::path::Path::new(CGI_FCGI).exists(),
        "{CGI_FCGI} is missing: run scripts/install-test-deps.sh"
    );
    let mut child = Command::new(CGI_FCGI)
        .args(["-bind", "-connect", &format!("127.0.0.1:{port}")])
        .env_clear()
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cgi-fcgi did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A CGI response: the head's lines and the body.
fn split(stdout: &[u8]) -> (Vec<String>, Vec<u8>) {
    let end = stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {}", String::from_utf8_lossy(stdout)));
    let head = String::from_utf8(stdout[..end].to_vec()).unwrap();
    (
        head.split("\r\n").map(str::to_owned).collect(),
        stdout[end + 4..].to_vec(),
    )
}

const VARS: &[(&str, &str)] = &[
    ("GATEWAY_INTERFACE", "CGI/1.1"),
    ("SERVER_SOFTWARE", "cgi-fcgi"),
    ("SERVER_NAME", "example.test"),
    ("SERVER_PORT", "8080"),
    ("SERVER_PROTOCOL", "HTTP/1.1"),
    ("REMOTE_ADDR", "192.0.2.9"),
    ("SCRIPT_NAME", "/app"),
    ("QUERY_STRING", "a=1&b=%20"),
    ("HTTP_HOST", "example.test:8080"),
    ("HTTP_X_TOKEN", "secret"),
];

#[test]
fn echo_answers_cgi_fcgi() {
    let port = free_port();
    let _echo = echo(port, None);

    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let length = payload.len().to_string();
    let mut vars = VARS.to_vec();
    vars.extend([
        ("REQUEST_METHOD", "POST"),
        ("PATH_INFO", "/some/path"),
        ("CONTENT_TYPE", "application/octet-stream"),
        ("CONTENT_LENGTH", length.as_str()),
    ]);
    let output = cgi_fcgi(port, &vars, &payload);
    assert_eq!(
        output.status.code(),
        Some(0),
        "appStatus 0: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (head, body) = split(&output.stdout);
    assert_eq!(head[0], "Status: 200 OK");
    assert!(
        head.contains(&"content-type: application/json".to_owned()),
        "{head:?}"
    );
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{head:?}"
    );
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let environ = &json["environ"];
    for (name, value) in &vars {
        if *name != "GATEWAY_INTERFACE" {
            assert_eq!(environ[name], *value, "{name}");
        }
    }
    assert_eq!(environ["FCGI_ROLE"], "RESPONDER");
    assert_eq!(environ["wsgi.url_scheme"], "http");
    assert_eq!(json["body_len"], 3000);
    assert_eq!(json["body_sha256"], sha256_hex(&payload));

    // A status of the app's choice, and a GET with no body at all.
    let mut vars = VARS.to_vec();
    vars.extend([("REQUEST_METHOD", "GET"), ("PATH_INFO", "/status/418")]);
    let output = cgi_fcgi(port, &vars, b"");
    assert_eq!(output.status.code(), Some(0));
    let (head, body) = split(&output.stdout);
    assert_eq!(head[0], "Status: 418 I'm a teapot");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["environ"]["PATH_INFO"], "/status/418");
    assert_eq!(json["body_len"], 0);
}

#[test]
fn fcgi_web_server_addrs_decides_who_may_connect() {
    let mut vars = VARS.to_vec();
    vars.extend([("REQUEST_METHOD", "GET"), ("PATH_INFO", "/x")]);

    // 127.0.0.1 listed: served.
    let port = free_port();
    let _echo = echo(port, Some("::1, 127.0.0.1"));
    let output = cgi_fcgi(port, &vars, b"");
    assert_eq!(output.status.code(), Some(0));
    assert!(output.stdout.starts_with(b"Status: 200 OK\r\n"));

    // Only other addresses listed: the connection is closed, cgi-fcgi gets no answer.
    let port = free_port();
    let _echo = echo(port, Some("192.0.2.1"));
    let output = cgi_fcgi(port, &vars, b"");
    assert_ne!(output.status.code(), Some(0));
    assert!(
        output.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    // A value that is not a list of addresses: a usage error, nothing served.
    let output = Command::new(ECHO)
        .args(["--fastcgi", &format!("127.0.0.1:{}", free_port())])
        .env("FCGI_WEB_SERVER_ADDRS", "localhost")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("FCGI_WEB_SERVER_ADDRS"), "{stderr}");
}
