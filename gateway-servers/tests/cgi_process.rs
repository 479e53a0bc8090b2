//! `cgi::run` as a real CGI process: this test binary runs itself with a CGI environment, and
//! the child calls `cgi::run` on the environment, stdin, stdout and stderr it was given. What
//! is checked is what a web server sees: the bytes on stdout, the log on stderr, the exit code.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway_core::{Body, BoxError, Environ, StartResponse};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, StatusCode};

/// Set in the child: which app it runs.
const CHILD: &str = "GATEWAY_CGI_PROCESS_TEST_APP";

/// What the child writes to stderr when its test starts.
const READY: &str = "cgi child: ready";

/// The test every child runs: libtest starts it, and it becomes the CGI program.
#[test]
fn child() {
    let Ok(which) = std::env::var(CHILD) else {
        return; // Not a child: nothing to do here.
    };
    // The parent waits for this line before it closes stdout: libtest is done writing there.
    eprintln!("{READY}");
    let code = match which.as_str() {
        "echo" => gateway_servers::cgi::run(echo),
        "early" => {
            gateway_servers::cgi::run(|_: Environ, _: StartResponse| Body::error("no database"))
        }
        "late" => gateway_servers::cgi::run(|_: Environ, start: StartResponse| {
            let _ = start.start(StatusCode::OK, HeaderMap::new());
            Body::try_from_chunks([Ok::<_, BoxError>("part"), Err("lost the database".into())])
        }),
        other => panic!("no app {other}"),
    };
    // Leave with the adapter's exit code, before libtest says anything more on stdout.
    std::process::exit(if code == std::process::ExitCode::SUCCESS {
        0
    } else {
        1
    });
}

fn echo(mut environ: Environ, start: StartResponse) -> Body {
    let mut body = Vec::new();
    if let Err(error) = environ.input().read_to_end(&mut body) {
        return Body::error(error);
    }
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    let _ = start.start(StatusCode::OK, headers);
    let mut answer = format!(
        "{} {} run_once={} ",
        environ.request_method(),
        environ.url_scheme(),
        environ.run_once()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    Body::from(answer)
}

struct Outcome {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Outcome {
    /// stdout from the CGI response on: libtest announces the test before the app runs.
    fn response(&self) -> String {
        let text = String::from_utf8_lossy(&self.stdout);
        let start = ["Status: ", "HTTP/1."]
            .iter()
            .filter_map(|p| text.find(p))
            .min()
            .unwrap_or_else(|| panic!("no response on stdout: {text:?} {}", self.stderr));
        text[start..].to_owned()
    }
}

/// Runs this binary's `child` test as a CGI program: `app`, the variables, stdin, `argv[0]`.
/// With `close_stdout`, the child's stdout is closed (the web server went away) once the
/// child is running; its stdin is closed after that.
fn run(
    app: &str,
    vars: &[(&str, &str)],
    stdin: &[u8],
    argv0: Option<&str>,
    close_stdout: bool,
) -> Outcome {
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new(&exe);
    command
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env_clear()
        .env(CHILD, app)
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(argv0) = argv0 {
        command.arg0(argv0);
    }
    let mut child = command.spawn().unwrap();
    let mut stdin_pipe = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let err = std::thread::spawn(move || {
        let mut data = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut told = false;
        while let Ok(n @ 1..) = stderr.read(&mut chunk) {
            data.extend_from_slice(&chunk[..n]);
            if !told && String::from_utf8_lossy(&data).contains(READY) {
                told = true;
                let _ = ready_tx.send(());
            }
        }
        String::from_utf8_lossy(&data).into_owned()
    });
    let out = if close_stdout {
        // The web server goes away once the child runs the app (which waits for its stdin).
        let _ = ready_rx.recv_timeout(Duration::from_secs(20));
        drop(stdout);
        std::thread::spawn(Vec::new)
    } else {
        std::thread::spawn(move || {
            let mut data = Vec::new();
            let _ = stdout.read_to_end(&mut data);
            data
        })
    };
    let _ = stdin_pipe.write_all(stdin);
    drop(stdin_pipe);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the CGI child did not finish");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Outcome {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

const BASE: &[(&str, &str)] = &[
    ("GATEWAY_INTERFACE", "CGI/1.1"),
    ("SERVER_NAME", "localhost"),
    ("SERVER_PORT", "443"),
    ("SERVER_PROTOCOL", "HTTP/1.1"),
    ("SCRIPT_NAME", "/cgi-bin/app"),
    ("HTTPS", "on"),
];

fn vars(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    BASE.iter().chain(extra).copied().collect()
}

#[test]
fn a_request_from_the_environment_and_stdin() {
    let outcome = run(
        "echo",
        &vars(&[("REQUEST_METHOD", "PUT"), ("CONTENT_LENGTH", "4")]),
        b"bodyand more",
        None,
        false,
    );
    assert_eq!(outcome.code, Some(0), "{}", outcome.stderr);
    assert_eq!(
        outcome.response(),
        "Status: 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 28\r\n\r\n\
         PUT https run_once=true body"
    );

    // Apache's chunked request: stdin to its end.
    let outcome = run(
        "echo",
        &vars(&[
            ("REQUEST_METHOD", "POST"),
            ("HTTP_TRANSFER_ENCODING", "chunked"),
        ]),
        b"all of stdin",
        None,
        false,
    );
    assert_eq!(outcome.code, Some(0), "{}", outcome.stderr);
    assert!(
        outcome
            .response()
            .ends_with("\r\n\r\nPOST https run_once=true all of stdin"),
        "{}",
        outcome.response()
    );
}

/// Runs the echo app as CGI for a POST with `length` as CONTENT_LENGTH and `stdin`: the answer
/// must be a 400, and stderr must say `why`.
fn assert_bad_request(length: &'static str, stdin: &[u8], why: &str) {
    let outcome = run(
        "echo",
        &vars(&[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", length)]),
        stdin,
        None,
        false,
    );
    assert_eq!(outcome.code, Some(0), "{}", outcome.stderr);
    let response = outcome.response();
    assert!(
        response.starts_with("Status: 400 Bad Request\r\n"),
        "{length}: {response}"
    );
    assert!(outcome.stderr.contains(why), "{}", outcome.stderr);
}

#[test]
fn a_content_length_that_is_not_a_number_is_a_400_and_the_app_is_not_called() {
    for length in ["abc", "5 ", "-1"] {
        assert_bad_request(length, b"hello", "invalid CONTENT_LENGTH");
    }
}

#[test]
fn a_body_that_ends_before_its_content_length_is_a_400() {
    // The web server closes stdin when its client goes away: the app's read fails on the
    // client's doing.
    assert_bad_request("10", b"abc", "ended after 3 of 10 bytes");
}

#[test]
fn an_nph_program_by_its_argv0() {
    let mut base: Vec<_> = vars(&[("REQUEST_METHOD", "GET")]);
    base.retain(|(name, _)| *name != "SCRIPT_NAME");
    let outcome = run("echo", &base, b"", Some("/usr/lib/cgi-bin/nph-app"), false);
    assert_eq!(outcome.code, Some(0), "{}", outcome.stderr);
    let response = outcome.response();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("\r\nConnection: close\r\n"), "{response}");
}

#[test]
fn a_failure_before_the_head_is_a_500_and_a_log_line() {
    let outcome = run(
        "early",
        &vars(&[("REQUEST_METHOD", "GET")]),
        b"",
        None,
        false,
    );
    assert_eq!(outcome.code, Some(0), "the response was written whole");
    assert!(
        outcome
            .response()
            .starts_with("Status: 500 Internal Server Error\r\n"),
        "{}",
        outcome.response()
    );
    assert!(outcome.stderr.contains("no database"), "{}", outcome.stderr);
}

#[test]
fn a_failure_after_the_head_fails_the_process() {
    let outcome = run(
        "late",
        &vars(&[("REQUEST_METHOD", "GET")]),
        b"",
        None,
        false,
    );
    assert_eq!(outcome.code, Some(1), "{}", outcome.stderr);
    assert_eq!(outcome.response(), "Status: 200 OK\r\n\r\npart");
    assert!(
        outcome.stderr.contains("lost the database"),
        "{}",
        outcome.stderr
    );
    assert_eq!(
        outcome.stderr.matches("lost the database").count(),
        1,
        "logged once: {}",
        outcome.stderr
    );
}

#[test]
fn a_closed_stdout_fails_the_process() {
    // The app reads stdin to its end first, so stdout is gone before it answers.
    let outcome = run(
        "echo",
        &vars(&[
            ("REQUEST_METHOD", "POST"),
            ("HTTP_TRANSFER_ENCODING", "chunked"),
        ]),
        b"body",
        None,
        true,
    );
    assert_eq!(outcome.code, Some(1), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("gateway: CGI response failed"),
        "{}",
        outcome.stderr
    );
}
