//! The `echo` program as a CGI script: run directly with a crafted environment, and behind real
//! web servers from Debian's packages (Apache with mod_cgid, lighttpd with mod_cgi), started on
//! 127.0.0.1 ports and stopped by PID. `scripts/install-test-deps.sh` installs them; a missing
//! server fails the test rather than skipping it.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

const ECHO: &str = env!("CARGO_BIN_EXE_echo");

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

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

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("gateway-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Apache runs CGI scripts as `nobody`: the directory must be readable by all.
        set_mode(&dir, 0o755);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn install_script(dir: &Path, name: &str) {
    let target = dir.join(name);
    std::fs::copy(ECHO, &target).unwrap();
    set_mode(&target, 0o755);
}

/// A web server process, stopped (SIGTERM, then SIGKILL) when dropped.
struct WebServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl WebServer {
    fn start(program: &str, args: &[&str], port: u16, log: PathBuf) -> WebServer {
        assert!(
            Path::new(program).exists(),
            "{program} is missing: run scripts/install-test-deps.sh"
        );
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = WebServer { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{program} did not start: {}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What curl got: the status, the headers (lower-cased names) and the body.
struct Fetched {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

fn curl(args: &[&str], stdin: Option<&[u8]>) -> Fetched {
    let dir = TempDir::new(&format!("curl-{}", free_port()));
    let head_file = dir.0.join("head");
    let mut command = Command::new("curl");
    command
        .args(["-s", "--max-time", "15", "-D"])
        .arg(&head_file)
        .args(args)
        .stdout(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = command
        .spawn()
        .expect("curl: run scripts/install-test-deps.sh");
    if let Some(data) = stdin {
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let head = std::fs::read_to_string(&head_file).unwrap_or_default();
    // The last head (after any 100 Continue).
    let last = head
        .trim_end()
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or("")
        .to_owned();
    let mut lines = last.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Fetched {
        status,
        headers,
        body: output.stdout,
    }
}

/// The checks every front end must pass, field by field. `passes_length`: whether the front end
/// passes a CGI script's `Content-Length` on (Apache 2.4.59 and later strip it from CGI-like
/// responses, CVE-2024-24795).
fn check_front_end(
    server: &WebServer,
    script_url: &str,
    script_name: &str,
    chunked: bool,
    passes_length: bool,
) {
    let get = curl(
        &[
            "-H",
            "X-Token: secret",
            "-H",
            "Cookie: a=1",
            &server.url(&format!("{script_url}/some/path?q=1&r=%20x")),
        ],
        None,
    );
    assert_eq!(get.status, 200);
    assert_eq!(get.header("content-type"), Some("application/json"));
    let json = get.json();
    let environ = &json["environ"];
    assert_eq!(environ["REQUEST_METHOD"], "GET");
    assert_eq!(environ["SCRIPT_NAME"], script_name);
    assert_eq!(environ["PATH_INFO"], "/some/path");
    assert_eq!(environ["QUERY_STRING"], "q=1&r=%20x");
    assert_eq!(environ["HTTP_X_TOKEN"], "secret");
    assert_eq!(environ["HTTP_COOKIE"], "a=1");
    assert_eq!(environ["SERVER_PORT"], server.port.to_string());
    assert_eq!(environ["wsgi.url_scheme"], "http");
    assert_eq!(json["body_len"], 0);

    let payload: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let post = curl(
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            "@-",
            &server.url(&format!("{script_url}/upload")),
        ],
        Some(&payload),
    );
    let json = post.json();
    assert_eq!(json["environ"]["CONTENT_LENGTH"], "50000");
    assert_eq!(json["environ"]["CONTENT_TYPE"], "application/octet-stream");
    assert_eq!(json["body_len"], 50_000);
    assert_eq!(json["body_sha256"], sha256_hex(&payload));

    if chunked {
        let post = curl(
            &[
                "-X",
                "POST",
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                "@-",
                &server.url(&format!("{script_url}/chunked")),
            ],
            Some(&payload),
        );
        let json = post.json();
        assert_eq!(json["body_len"], 50_000, "{}", json["environ"]);
        assert_eq!(json["body_sha256"], sha256_hex(&payload));
    }

    let teapot = curl(&[&server.url(&format!("{script_url}/status/418"))], None);
    assert_eq!(teapot.status, 418);
    assert_eq!(teapot.json()["environ"]["PATH_INFO"], "/status/418");
    let missing = curl(&[&server.url(&format!("{script_url}/status/404"))], None);
    assert_eq!(missing.status, 404);

    // `curl -I` prints the head on stdout: anything after it would be a body.
    let head = curl(&["-I", &server.url(&format!("{script_url}/h"))], None);
    assert_eq!(head.status, 200);
    let printed = String::from_utf8_lossy(&head.body);
    assert!(
        printed.ends_with("\r\n\r\n") && !printed.contains('{'),
        "{printed}"
    );
    if passes_length {
        assert!(
            head.header("content-length").is_some_and(|l| l != "0"),
            "HEAD keeps the length"
        );
    }

    let stream = curl(&[&server.url(&format!("{script_url}/stream/5"))], None);
    assert_eq!(stream.status, 200);
    assert_eq!(stream.body, vec![b'x'; 5000]);

    let headers = curl(
        &[&server.url(&format!("{script_url}/headers?x-one=1&x-two=a%20b"))],
        None,
    );
    assert_eq!(headers.header("x-one"), Some("1"));
    assert_eq!(headers.header("x-two"), Some("a b"));
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
