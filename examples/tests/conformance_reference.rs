//! The conformance suite against reference servers of the Python ecosystem serving the
//! equivalent echo app (`examples/python/echo_app.py`): flup's FastCGI server, uWSGI over its
//! uwsgi protocol, gunicorn over HTTP and wsgiref's CGI handler. Each server fails exactly the
//! cases listed below, each with the reason (docs/conformance.md explains them at length, and
//! this test keeps that page true). The same suite against this project's `echo` program, on
//! each protocol, fails nothing.
//!
//! Needs what `scripts/install-test-deps.sh` installs: uWSGI's python3 plugin, flup and
//! gunicorn.

mod common;

use std::collections::BTreeSet;

use common::{ECHO, TempDir, WebServer, free_port, python3_with};
use gateway_testkit::conformance::{self, Options, Target};

/// The directory of the Python echo app and its entry scripts.
const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python");

/// The uWSGI binary (Debian's uwsgi-core).
const UWSGI: &str = "/usr/bin/uwsgi";

/// A case a server fails, and why.
type Expected = (&'static str, &'static str);

/// flup 1.0.3, `flup.server.fcgi.WSGIServer` (threaded, not multiplexed).
const FLUP: &[Expected] = &[
    (
        "hdr-proxy-var",
        "passes the front end's HTTP_PROXY param on unchanged (a hardening case: the suite's \
         FastCGI client plays a front end that does not drop it)",
    ),
    (
        "head-no-body",
        "writes the app's body for HEAD into FCGI_STDOUT, leaving it to the front end to drop",
    ),
    (
        "fcgi-get-values",
        "bug: looks the decoded names (bytes) up in a dict keyed by str, so it never knows one \
         and answers an empty FCGI_GET_VALUES_RESULT",
    ),
    ("fcgi-get-values-subset", "the same bug as fcgi-get-values"),
    (
        "fcgi-abort",
        "FCGI_ABORT_REQUEST only sets a flag on the request; no FCGI_END_REQUEST is sent \
         while the app waits for the stdin that will not come",
    ),
    (
        "fcgi-split-records",
        "bug: decodes the name-value pairs of each PARAMS record on its own, so a pair cut \
         across records is lost",
    ),
];

/// uWSGI 2.0.21 (Debian), python3 plugin, defaults.
const UWSGI_DEFAULTS: &[Expected] = &[
    (
        "hdr-proxy-var",
        "passes the front end's HTTP_PROXY var on unchanged (a hardening case: the suite's uwsgi \
         client plays a front end that does not drop it)",
    ),
    (
        "hdr-large",
        "a packet larger than --buffer-size (4096 by default) is refused: the connection is \
         closed",
    ),
    (
        "head-no-body",
        "sends the app's body for HEAD, leaving it to the front end to drop",
    ),
    (
        "chunked-body",
        "uWSGI 2.0 gives a chunked body only to uwsgi.chunked_read(); wsgi.input is empty \
         without CONTENT_LENGTH",
    ),
    ("chunked-many-small", "the same as chunked-body"),
    (
        "uwsgi-ping",
        "pings (modifier1 100) are answered by the ping plugin, not loaded here",
    ),
];

/// uWSGI with the ping plugin and a larger buffer: the two failures of configuration go.
const UWSGI_TUNED: &[Expected] = &[
    UWSGI_DEFAULTS[0], // hdr-proxy-var
    UWSGI_DEFAULTS[2], // head-no-body
    UWSGI_DEFAULTS[3], // chunked-body
    UWSGI_DEFAULTS[4], // chunked-many-small
];

/// gunicorn 27.0.1, gthread worker.
const GUNICORN: &[Expected] = &[
    (
        "hdr-host",
        "SERVER_NAME and SERVER_PORT are the listening socket's address, not the Host header's",
    ),
    (
        "hdr-proxy",
        "maps every request header to HTTP_*, Proxy included",
    ),
];

/// wsgiref's CGIHandler (Python's standard library).
const WSGIREF_CGI: &[Expected] = &[(
    "hdr-proxy-var",
    "copies the process environment into the environ, HTTP_PROXY (set by the CGI client from \
     Proxy) included",
)];

/// Runs the suite against `target` and checks that it fails exactly `expected` and passes at
/// least `min_passed` cases (so a server that is not there cannot look conformant).
fn check(name: &str, target: &Target, expected: &[Expected], min_passed: usize) {
    let report = conformance::run(target, &Options::default());
    eprintln!("{name}:\n{}", report.table());
    let failed: BTreeSet<&str> = report.failures().iter().map(|(id, _)| *id).collect();
    let wanted: BTreeSet<&str> = expected.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        failed,
        wanted,
        "{name}: the failing cases changed (update the list here and docs/conformance.md); \
         failures: {:#?}",
        report.failures()
    );
    assert!(
        report.passed() >= min_passed,
        "{name}: {} passed, want at least {min_passed}",
        report.summary()
    );
}

#[test]
fn flup_fastcgi() {
    let python = python3_with(&["flup"]);
    let dir = TempDir::new("conf-flup");
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let script = format!("{PYTHON}/fcgi_echo.py");
    let _server = WebServer::start(&python, &[&script, &address], port, dir.0.join("log"));
    check("flup", &Target::FastCgi(address), FLUP, 45);
}

/// Starts uWSGI with `plugins` (loaded first: their options are unknown before) and `extra`.
fn start_uwsgi(dir: &TempDir, plugins: &str, extra: &[&str]) -> (WebServer, String) {
    assert!(
        std::path::Path::new("/usr/lib/uwsgi/plugins/python3_plugin.so").exists(),
        "uWSGI's python3 plugin is missing: run scripts/install-test-deps.sh"
    );
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let app = format!("{PYTHON}/echo_app.py");
    let log = dir.0.join("uwsgi.log");
    let mut args = vec![
        "--plugins",
        plugins,
        "--uwsgi-socket",
        &address,
        "--wsgi-file",
        &app,
        "--master",
        "--die-on-term",
        "--processes",
        "1",
        "--threads",
        "4",
        "--logto",
        log.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let server = WebServer::start(UWSGI, &args, port, log.clone());
    (server, address)
}

#[test]
fn uwsgi_defaults() {
    let dir = TempDir::new("conf-uwsgi");
    let (_server, address) = start_uwsgi(&dir, "python3", &[]);
    check("uWSGI", &Target::Uwsgi(address), UWSGI_DEFAULTS, 38);
}

#[test]
fn uwsgi_with_ping_and_buffer() {
    let dir = TempDir::new("conf-uwsgi-tuned");
    let (_server, address) = start_uwsgi(&dir, "python3,ping", &["--buffer-size", "32768"]);
    check("uWSGI tuned", &Target::Uwsgi(address), UWSGI_TUNED, 40);
}

#[test]
fn gunicorn_http() {
    let python = python3_with(&["gunicorn"]);
    let dir = TempDir::new("conf-gunicorn");
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let log = dir.0.join("gunicorn.log");
    let args = [
        "-m",
        "gunicorn",
        "--chdir",
        PYTHON,
        "-k",
        "gthread",
        "--threads",
        "4",
        "--graceful-timeout",
        "2",
        "--error-logfile",
        log.to_str().unwrap(),
        "-b",
        &address,
        "echo_app:application",
    ];
    let _server = WebServer::start(&python, &args, port, log.clone());
    check("gunicorn", &Target::Http(address), GUNICORN, 49);
}

#[test]
fn wsgiref_cgi() {
    let python = python3_with(&["wsgiref.handlers"]);
    let target = Target::Cgi(vec![python, format!("{PYTHON}/cgi_echo.py")]);
    check("wsgiref CGI", &target, WSGIREF_CGI, 40);
}

/// This project's `echo` program on a network protocol (`--http`, `--fastcgi`, `--uwsgi`).
fn own_echo(flag: &str, target: fn(String) -> Target, min_passed: usize) {
    let dir = TempDir::new(&format!("conf-echo{flag}"));
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let _server = WebServer::start(ECHO, &[flag, &address], port, dir.0.join("log"));
    check(&format!("echo {flag}"), &target(address), &[], min_passed);
}

#[test]
fn own_echo_http() {
    own_echo("--http", Target::Http, 52);
}

#[test]
fn own_echo_fastcgi() {
    own_echo("--fastcgi", Target::FastCgi, 52);
}

#[test]
fn own_echo_uwsgi() {
    own_echo("--uwsgi", Target::Uwsgi, 44);
}

#[test]
fn own_echo_cgi() {
    // The CGI client sets GATEWAY_INTERFACE, so the launcher serves one request as CGI.
    check("echo as CGI", &Target::Cgi(vec![ECHO.to_owned()]), &[], 41);
}

/// Every listed case has a reason, and no case is listed twice.
#[test]
fn the_lists_are_well_formed() {
    let known: BTreeSet<&str> = conformance::cases().iter().map(|c| c.id).collect();
    for list in [FLUP, UWSGI_DEFAULTS, UWSGI_TUNED, GUNICORN, WSGIREF_CGI] {
        let ids: BTreeSet<&str> = list.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids.len(), list.len(), "a case is listed twice");
        for (id, why) in list {
            assert!(known.contains(id), "{id} is not a case of the suite");
            assert!(!why.is_empty(), "{id} has no reason");
        }
    }
}
