//! The `echo` program as a CGI script: run directly with a crafted environment, and behind real
//! web servers from Debian's packages (Apache with mod_cgid, lighttpd with mod_cgi), started on
//! 127.0.0.1 ports and stopped by PID. `scripts/install-test-deps.sh` installs them; a missing
//! server fails the test rather than skipping it.

mod common;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    ECHO, TempDir, check_front_end, exchange, exchange_raw, install_script, set_mode, sha256_hex,
    start_apache, start_lighttpd, status_of,
};
use serde_json::Value;

const HELLO: &str = env!("CARGO_BIN_EXE_hello");

/// Runs the echo binary as a CGI script with exactly `vars` and `stdin`.
fn run_cgi(vars: &[(&str, &str)], stdin: &[u8]) -> (String, Vec<u8>) {
    let vars: Vec<(&[u8], &[u8])> = vars
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    run_program(ECHO, &vars, stdin)
}

/// How long a CGI process may take before the test fails (it is killed, not waited for).
const PROCESS_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `program` as a CGI script with exactly `vars` (as bytes) and `stdin`; it must exit 0.
/// Returns the head (up to the blank line) and the body.
fn run_program(program: &str, vars: &[(&[u8], &[u8])], stdin: &[u8]) -> (String, Vec<u8>) {
    let (success, stdout, stderr) = run_process(program, vars, stdin);
    assert!(success, "{program} failed: {stderr}");
    let split = stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&stdout[..split]).into_owned();
    (head, stdout[split + 4..].to_vec())
}

/// Runs `program` with exactly `vars` and `stdin`, killed after [`PROCESS_TIMEOUT`]: whether
/// it exited 0, its stdout and its stderr.
fn run_process(program: &str, vars: &[(&[u8], &[u8])], stdin: &[u8]) -> (bool, Vec<u8>, String) {
    let mut child = Command::new(program)
        .env_clear()
        .envs(
            vars.iter()
                .map(|(n, v)| (OsStr::from_bytes(n), OsStr::from_bytes(v))),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The script may exit without reading its stdin: a broken pipe here is not a failure.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut data = Vec::new();
        let _ = stdout.read_to_end(&mut data);
        data
    });
    let err = std::thread::spawn(move || {
        let mut data = Vec::new();
        let _ = stderr.read_to_end(&mut data);
        String::from_utf8_lossy(&data).into_owned()
    });
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} did not answer within {PROCESS_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    (status.success(), out.join().unwrap(), err.join().unwrap())
}

fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// The value of a header in a head (names compared without case), if it is there.
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// What every test request to the echo script carries, as Apache would set it.
const BASE: &[(&str, &str)] = &[
    ("GATEWAY_INTERFACE", "CGI/1.1"),
    ("SERVER_NAME", "localhost"),
    ("SERVER_PORT", "80"),
    ("SERVER_PROTOCOL", "HTTP/1.1"),
    ("SCRIPT_NAME", "/cgi-bin/echo"),
];

fn with_base(vars: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    BASE.iter().chain(vars).copied().collect()
}

#[test]
fn echo_as_a_cgi_script_with_a_crafted_environment() {
    let vars = [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", "POST"),
        ("SCRIPT_NAME", "/cgi-bin/echo"),
        ("SCRIPT_FILENAME", "/usr/lib/cgi-bin/echo"),
        ("PATH_INFO", "/a b/c"),
        ("QUERY_STRING", "x=1&y=%20"),
        ("REQUEST_URI", "/cgi-bin/echo/a%20b/c?x=1&y=%20"),
        ("CONTENT_LENGTH", "5"),
        ("CONTENT_TYPE", "text/plain"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "8443"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REMOTE_ADDR", "192.0.2.1"),
        ("HTTP_HOST", "localhost:8443"),
        ("HTTP_X_TOKEN", "t"),
        ("HTTP_CONTENT_LENGTH", "5"),
        ("HTTP_PROXY", "http://evil"),
        ("HTTPS", "on"),
    ];
    let (head, body) = run_cgi(&vars, b"helloTRAILING");
    assert!(head.starts_with("Status: 200 OK\r\n"), "{head}");
    assert_eq!(header(&head, "content-type"), Some("application/json"));
    assert_eq!(
        header(&head, "content-length"),
        Some(body.len().to_string().as_str())
    );
    let json = parse(&body);
    let environ = &json["environ"];
    for (name, value) in [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", "POST"),
        ("SCRIPT_NAME", "/cgi-bin/echo"),
        ("SCRIPT_FILENAME", "/usr/lib/cgi-bin/echo"),
        ("PATH_INFO", "/a b/c"),
        ("QUERY_STRING", "x=1&y=%20"),
        ("REQUEST_URI", "/cgi-bin/echo/a%20b/c?x=1&y=%20"),
        ("CONTENT_LENGTH", "5"),
        ("CONTENT_TYPE", "text/plain"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "8443"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REMOTE_ADDR", "192.0.2.1"),
        ("HTTP_HOST", "localhost:8443"),
        ("HTTP_X_TOKEN", "t"),
        ("HTTPS", "on"),
        ("wsgi.url_scheme", "https"),
    ] {
        assert_eq!(environ[name], value, "{name}");
    }
    assert!(environ.get("HTTP_PROXY").is_none(), "httpoxy");
    assert!(environ.get("HTTP_CONTENT_LENGTH").is_none());
    assert_eq!(json["body_len"], 5, "CONTENT_LENGTH bytes, not one more");
    assert_eq!(json["body_sha256"], sha256_hex(b"hello"));
}

#[test]
fn echo_as_a_cgi_script_reads_the_body_each_server_sends() {
    // Apache mod_cgid and a chunked request: no length, the body is read to its end.
    let (_, body) = run_cgi(
        &with_base(&[
            ("REQUEST_METHOD", "POST"),
            ("HTTP_TRANSFER_ENCODING", "chunked"),
        ]),
        b"streamed body",
    );
    let json = parse(&body);
    assert_eq!(json["body_len"], 13);
    assert_eq!(json["body_sha256"], sha256_hex(b"streamed body"));
    assert_eq!(json["environ"]["HTTP_TRANSFER_ENCODING"], "chunked");
    assert!(json["environ"].get("CONTENT_LENGTH").is_none());

    // nginx without a body: empty CONTENT_LENGTH and CONTENT_TYPE are no variables at all.
    let (_, body) = run_cgi(
        &with_base(&[
            ("REQUEST_METHOD", "GET"),
            ("CONTENT_LENGTH", ""),
            ("CONTENT_TYPE", ""),
        ]),
        b"not a body",
    );
    let json = parse(&body);
    assert!(json["environ"].get("CONTENT_LENGTH").is_none());
    assert!(json["environ"].get("CONTENT_TYPE").is_none());
    assert_eq!(json["body_len"], 0);
    assert_eq!(json["body_sha256"], sha256_hex(b""));

    // lighttpd without a body: CONTENT_LENGTH=0.
    let (_, body) = run_cgi(
        &with_base(&[("REQUEST_METHOD", "GET"), ("CONTENT_LENGTH", "0")]),
        b"not a body",
    );
    assert_eq!(parse(&body)["body_len"], 0);

    // A large body, CONTENT_LENGTH bounded.
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let length = payload.len().to_string();
    let vars: Vec<(&[u8], &[u8])> = with_base(&[("REQUEST_METHOD", "PUT")])
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .chain([(&b"CONTENT_LENGTH"[..], length.as_bytes())])
        .collect();
    let (_, body) = run_program(ECHO, &vars, &payload);
    let json = parse(&body);
    assert_eq!(json["body_len"], 300_000);
    assert_eq!(json["body_sha256"], sha256_hex(&payload));
}

#[test]
fn echo_as_a_cgi_script_maps_bytes_as_latin1() {
    let vars: Vec<(&[u8], &[u8])> = vec![
        (b"GATEWAY_INTERFACE", b"CGI/1.1"),
        (b"REQUEST_METHOD", b"GET"),
        (b"SERVER_NAME", b"localhost"),
        (b"SERVER_PORT", b"80"),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"SCRIPT_NAME", b"/cgi-bin/echo"),
        (b"PATH_INFO", b"/caf\xc3\xa9"),
        (b"HTTP_X_LATIN", b"caf\xe9 \xff"),
    ];
    let (_, body) = run_program(ECHO, &vars, b"");
    let json = parse(&body);
    // UTF-8 bytes are not decoded as UTF-8: one byte, one code point.
    assert_eq!(json["environ"]["PATH_INFO"], "/caf\u{c3}\u{a9}");
    assert_eq!(json["environ"]["HTTP_X_LATIN"], "caf\u{e9} \u{ff}");
}

#[test]
fn echo_as_a_cgi_script_statuses_head_headers_and_streams() {
    let get = |path: &'static str, query: &'static str| {
        run_cgi(
            &with_base(&[
                ("REQUEST_METHOD", "GET"),
                ("PATH_INFO", path),
                ("QUERY_STRING", query),
            ]),
            b"",
        )
    };
    let (head, body) = get("/status/418", "");
    assert!(head.starts_with("Status: 418 I'm a teapot\r\n"), "{head}");
    assert_eq!(header(&head, "content-type"), Some("application/json"));
    assert_eq!(parse(&body)["environ"]["PATH_INFO"], "/status/418");
    for (path, line) in [
        ("/status/204", "Status: 204 No Content"),
        ("/status/304", "Status: 304 Not Modified"),
    ] {
        let (head, body) = get(path, "");
        assert!(head.starts_with(line), "{head}");
        assert_eq!(header(&head, "content-type"), Some("application/json"));
        assert_eq!(header(&head, "content-length"), None, "{head}");
        assert!(body.is_empty(), "{path}");
    }

    let (head, body) = get("/headers", "x-one=1&x-two=a%20b&x-one=3");
    let ones: Vec<&str> = head
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("x-one: "))
        .collect();
    assert_eq!(ones, ["1", "3"], "{head}");
    assert_eq!(header(&head, "x-two"), Some("a b"));
    assert_eq!(
        parse(&body)["environ"]["QUERY_STRING"],
        "x-one=1&x-two=a%20b&x-one=3"
    );

    let (head, body) = get("/stream/4", "");
    assert_eq!(header(&head, "content-type"), Some("text/plain"));
    assert_eq!(header(&head, "content-length"), None, "{head}");
    assert_eq!(body, vec![b'x'; 4000]);

    // HEAD: the head of the GET, Content-Length included, and no body.
    let (get_head, get_body) = get("/h", "");
    let (head, body) = run_cgi(
        &with_base(&[("REQUEST_METHOD", "HEAD"), ("PATH_INFO", "/h")]),
        b"",
    );
    assert!(head.starts_with("Status: 200 OK\r\n"), "{head}");
    assert!(body.is_empty());
    let length: usize = header(&head, "content-length").unwrap().parse().unwrap();
    assert!(length > 0);
    // The HEAD's environ says HEAD where the GET's says GET: the lengths differ by one.
    assert_eq!(
        header(&get_head, "content-length"),
        Some(get_body.len().to_string().as_str())
    );
    assert_eq!(length, get_body.len() + 1);
}

#[test]
fn echo_as_an_nph_script() {
    for (protocol, line) in [
        ("HTTP/1.1", "HTTP/1.1 200 OK"),
        ("HTTP/1.0", "HTTP/1.0 200 OK"),
    ] {
        let (head, body) = run_cgi(
            &[
                ("GATEWAY_INTERFACE", "CGI/1.1"),
                ("REQUEST_METHOD", "GET"),
                ("SERVER_NAME", "localhost"),
                ("SERVER_PORT", "80"),
                ("SCRIPT_NAME", "/cgi-bin/nph-echo"),
                ("SERVER_PROTOCOL", protocol),
            ],
            b"",
        );
        assert!(head.starts_with(&format!("{line}\r\n")), "{head}");
        assert_eq!(header(&head, "connection"), Some("close"));
        assert!(header(&head, "date").is_some_and(|d| d.ends_with(" GMT")));
        assert!(header(&head, "server").is_some());
        assert!(!head.contains("Status:"), "{head}");
        assert_eq!(parse(&body)["environ"]["SCRIPT_NAME"], "/cgi-bin/nph-echo");
    }
}

#[test]
fn hello_as_a_cgi_script() {
    let vars: Vec<(&[u8], &[u8])> = BASE
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .chain([(&b"REQUEST_METHOD"[..], &b"GET"[..])])
        .collect();
    let (head, body) = run_program(HELLO, &vars, b"");
    assert!(head.starts_with("Status: 200 OK\r\n"), "{head}");
    assert!(
        header(&head, "content-type").is_some_and(|t| t.starts_with("text/plain")),
        "{head}"
    );
    assert_eq!(header(&head, "content-length"), Some("14"));
    assert_eq!(body, b"Hello, world!\n");
}

/// What the front-end tests of other interfaces do not check and CGI has: statuses without a
/// body, HEAD and streams as the raw bytes show them, header bytes that are not UTF-8, and an
/// NPH script. `nph_url`: the URL of the echo program installed as an NPH script.
/// `nph_passed_through`: whether the front end sends an NPH script's head unmodified (Apache)
/// rather than parsing it (lighttpd).
fn check_cgi_extras(port: u16, script_url: &str, nph_url: &str, nph_passed_through: bool) {
    let get = |target: String| {
        exchange(
            port,
            format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
    };
    for code in [204u16, 304] {
        let (head, body) = get(format!("{script_url}/status/{code}"));
        assert_eq!(status_of(&head), code, "{head}");
        assert!(
            body.is_empty(),
            "{code}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    // HTTP/1.0: no chunking, the stream ends with the connection; no length was promised.
    let (head, body) = exchange(
        port,
        format!("GET {script_url}/stream/7 HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes(),
    );
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(header(&head, "content-type"), Some("text/plain"));
    assert_eq!(body, vec![b'x'; 7000]);

    // As it came: a chunked empty body (`0\r\n\r\n`) would de-chunk to nothing.
    let (head, body) = exchange_raw(
        port,
        format!("HEAD {script_url}/h HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status_of(&head), 200, "{head}");
    assert!(body.is_empty(), "HEAD: {}", String::from_utf8_lossy(&body));

    let mut request =
        format!("GET {script_url}/latin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n")
            .into_bytes();
    request.extend_from_slice(b"X-Latin: caf\xe9\r\n\r\n");
    let (head, body) = exchange(port, &request);
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(parse(&body)["environ"]["HTTP_X_LATIN"], "caf\u{e9}");

    let (head, body) = get(format!("{nph_url}/status/418"));
    assert_eq!(status_of(&head), 418, "{head}");
    let json = parse(&body);
    assert_eq!(json["environ"]["PATH_INFO"], "/status/418");
    assert!(
        json["environ"]["SCRIPT_NAME"]
            .as_str()
            .is_some_and(|s| s.ends_with(&nph_url[nph_url.rfind('/').unwrap()..])),
        "{}",
        json["environ"]
    );
    if nph_passed_through {
        // Our own head, byte for byte: the status line we wrote and our Server header.
        assert!(head.starts_with("HTTP/1.1 418 I'm a teapot\r\n"), "{head}");
        assert!(
            header(&head, "server").is_some_and(|s| s.starts_with("gateway/")),
            "{head}"
        );
    }
}

#[test]
fn echo_behind_apache_mod_cgid() {
    let dir = TempDir::new("apache");
    let cgi_bin = dir.0.join("cgi-bin");
    std::fs::create_dir(&cgi_bin).unwrap();
    set_mode(&cgi_bin, 0o755);
    install_script(&cgi_bin, "echo");
    install_script(&cgi_bin, "nph-echo");
    let root = dir.0.display();
    let directives = format!(
        "ScriptSock \"{root}/cgisock\"\n\
         ScriptAlias \"/cgi-bin/\" \"{root}/cgi-bin/\"\n\
         <Directory \"{root}/cgi-bin\">\n  Require all granted\n</Directory>\n"
    );
    let server = start_apache(&dir.0, &["alias", "cgid"], &directives);
    let port = server.port;
    check_front_end(&server, "/cgi-bin/echo", "/cgi-bin/echo", true, false);
    check_cgi_extras(port, "/cgi-bin/echo", "/cgi-bin/nph-echo", true);
}

#[test]
fn echo_behind_lighttpd_mod_cgi() {
    let dir = TempDir::new("lighttpd");
    let docroot = dir.0.join("docroot");
    std::fs::create_dir(&docroot).unwrap();
    install_script(&docroot, "echo.cgi");
    install_script(&docroot, "nph-echo.cgi");
    let server = start_lighttpd(
        &dir.0,
        "server.modules = (\"mod_cgi\")\ncgi.assign = (\".cgi\" => \"\")\n",
    );
    let port = server.port;
    check_front_end(&server, "/echo.cgi", "/echo.cgi", true, true);
    check_cgi_extras(port, "/echo.cgi", "/nph-echo.cgi", false);
}
