//! The `echo` program as a CGI script: run directly with a crafted environment, and behind real
//! web servers from Debian's packages (Apache with mod_cgid, lighttpd with mod_cgi), started on
//! 127.0.0.1 ports and stopped by PID. `scripts/install-test-deps.sh` installs them; a missing
//! server fails the test rather than skipping it.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    ECHO, TempDir, WebServer, check_front_end, free_port, install_script, set_mode, sha256_hex,
};
use serde_json::Value;

/// Runs the echo binary as a CGI script with exactly `vars` and `stdin`.
fn run_cgi(vars: &[(&str, &str)], stdin: &[u8]) -> (String, Vec<u8>) {
    let mut child = Command::new(ECHO)
        .env_clear()
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let split = output
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&output.stdout[..split]).into_owned();
    (head, output.stdout[split + 4..].to_vec())
}

#[test]
fn echo_as_a_cgi_script_with_a_crafted_environment() {
    let vars = [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", "POST"),
        ("SCRIPT_NAME", "/cgi-bin/echo"),
        ("PATH_INFO", "/a/b"),
        ("QUERY_STRING", "x=1"),
        ("CONTENT_LENGTH", "5"),
        ("CONTENT_TYPE", "text/plain"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("HTTP_X_TOKEN", "t"),
        ("HTTP_PROXY", "http://evil"),
        ("HTTPS", "on"),
    ];
    let started = Instant::now();
    let (head, body) = run_cgi(&vars, b"helloTRAILING");
    let elapsed = started.elapsed();
    assert!(head.starts_with("Status: 200 OK\r\n"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let json: Value = serde_json::from_slice(&body).unwrap();
    let environ = &json["environ"];
    assert_eq!(environ["REQUEST_METHOD"], "POST");
    assert_eq!(environ["SCRIPT_NAME"], "/cgi-bin/echo");
    assert_eq!(environ["PATH_INFO"], "/a/b");
    assert_eq!(environ["QUERY_STRING"], "x=1");
    assert_eq!(environ["HTTP_X_TOKEN"], "t");
    assert_eq!(environ["wsgi.url_scheme"], "https");
    assert!(environ.get("HTTP_PROXY").is_none(), "httpoxy");
    assert_eq!(json["body_len"], 5);
    assert_eq!(json["body_sha256"], sha256_hex(b"hello"));
    // Not a benchmark: a bound that only a hang or a runtime start-up would exceed.
    assert!(elapsed < Duration::from_secs(5));

    // No length and a chunked request (Apache mod_cgid): the body is read to its end.
    let (_, body) = run_cgi(
        &[
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("REQUEST_METHOD", "POST"),
            ("HTTP_TRANSFER_ENCODING", "chunked"),
        ],
        b"streamed body",
    );
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["body_len"], 13);

    // A status without a body, and the NPH form.
    let (head, body) = run_cgi(
        &[
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("REQUEST_METHOD", "GET"),
            ("PATH_INFO", "/status/204"),
        ],
        b"",
    );
    assert!(head.starts_with("Status: 204 No Content\r\n"), "{head}");
    assert!(body.is_empty() && !head.contains("content-length"));
    let (head, _) = run_cgi(
        &[
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("REQUEST_METHOD", "GET"),
            ("SCRIPT_NAME", "/cgi-bin/nph-echo"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
        ],
        b"",
    );
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
}

#[test]
fn echo_behind_apache_mod_cgid() {
    let dir = TempDir::new("apache");
    let cgi_bin = dir.0.join("cgi-bin");
    std::fs::create_dir(&cgi_bin).unwrap();
    set_mode(&cgi_bin, 0o755);
    install_script(&cgi_bin, "echo");
    std::fs::create_dir(dir.0.join("logs")).unwrap();
    let port = free_port();
    let modules = "/usr/lib/apache2/modules";
    let root = dir.0.display();
    let config = format!(
        "ServerRoot \"{root}\"\n\
         DefaultRuntimeDir \"{root}/logs\"\n\
         PidFile \"{root}/httpd.pid\"\n\
         ErrorLog \"{root}/error.log\"\n\
         Listen 127.0.0.1:{port}\n\
         ServerName localhost\n\
         LoadModule mpm_event_module {modules}/mod_mpm_event.so\n\
         LoadModule authz_core_module {modules}/mod_authz_core.so\n\
         LoadModule alias_module {modules}/mod_alias.so\n\
         LoadModule cgid_module {modules}/mod_cgid.so\n\
         User nobody\n\
         Group nogroup\n\
         DocumentRoot \"{root}\"\n\
         ScriptSock \"{root}/cgisock\"\n\
         ScriptAlias \"/cgi-bin/\" \"{root}/cgi-bin/\"\n\
         <Directory \"{root}/cgi-bin\">\n  Require all granted\n</Directory>\n"
    );
    let conf = dir.0.join("httpd.conf");
    std::fs::write(&conf, config).unwrap();
    let server = WebServer::start(
        "/usr/sbin/apache2",
        &["-f", conf.to_str().unwrap(), "-DFOREGROUND"],
        port,
        dir.0.join("error.log"),
    );
    check_front_end(&server, "/cgi-bin/echo", "/cgi-bin/echo", true, false);
}

#[test]
fn echo_behind_lighttpd_mod_cgi() {
    let dir = TempDir::new("lighttpd");
    let docroot = dir.0.join("docroot");
    std::fs::create_dir(&docroot).unwrap();
    install_script(&docroot, "echo.cgi");
    let port = free_port();
    let root = dir.0.display();
    let config = format!(
        "server.document-root = \"{root}/docroot\"\n\
         server.bind = \"127.0.0.1\"\n\
         server.port = {port}\n\
         server.pid-file = \"{root}/l.pid\"\n\
         server.errorlog = \"{root}/error.log\"\n\
         server.modules = (\"mod_cgi\")\n\
         cgi.assign = (\".cgi\" => \"\")\n"
    );
    let conf = dir.0.join("lighttpd.conf");
    std::fs::write(&conf, config).unwrap();
    let server = WebServer::start(
        "/usr/sbin/lighttpd",
        &["-D", "-f", conf.to_str().unwrap()],
        port,
        dir.0.join("error.log"),
    );
    check_front_end(&server, "/echo.cgi", "/echo.cgi", true, true);
}
