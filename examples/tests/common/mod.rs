//! What the tests of the example programs share: temporary directories, web servers started
//! and stopped by PID, curl, and the field-by-field checks of the `echo` program behind a front
//! end.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The echo program.
pub const ECHO: &str = env!("CARGO_BIN_EXE_echo");

/// The sleepy program: `/sleep/SECONDS` blocks in the app that long.
#[allow(dead_code)] // Not every test binary that shares this module runs it.
pub const SLEEPY: &str = env!("CARGO_BIN_EXE_sleepy");

/// The SHA-256 of `data`, in hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new, empty directory.
    pub fn new(name: &str) -> TempDir {
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

/// Sets the permissions of `path`.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Copies the echo program into `dir` as `name`, executable by all.
pub fn install_script(dir: &Path, name: &str) {
    let target = dir.join(name);
    std::fs::copy(ECHO, &target).unwrap();
    set_mode(&target, 0o755);
}

/// A web server process, run in the foreground, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct WebServer {
    /// The process, when this handle started it.
    child: Option<Child>,
    /// The program, for messages.
    program: String,
    /// The port it listens on.
    pub port: u16,
    log: PathBuf,
}

impl WebServer {
    /// Starts `program` in the foreground (its stdout and stderr appended to `log`) and waits
    /// until `port` accepts connections. A program that exits before then, even with success
    /// (a launcher that leaves a daemon behind), fails the test: the handle stops the process
    /// it started, and nothing else.
    pub fn start(program: &str, args: &[&str], port: u16, log: PathBuf) -> WebServer {
        assert!(
            Path::new(program).exists(),
            "{program} is missing: run scripts/install-test-deps.sh"
        );
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = Command::new(program)
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap();
        let mut server = WebServer {
            child: Some(child),
            program: program.to_owned(),
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let listening = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            // Checked after the connection: a program that has exited (one that could not
            // listen, or a launcher that left a daemon behind) fails the test even though
            // something answered on the port.
            let exited = server.child.as_mut().map(|c| c.try_wait());
            if let Some(Ok(Some(status))) = exited {
                server.child = None;
                panic!(
                    "{program} exited ({status}) instead of listening on {port}: {}",
                    server.log_text()
                );
            }
            if listening {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{program} did not start: {}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Another port of a server started with [`WebServer::start`]: a handle to build URLs,
    /// with no process of its own.
    pub fn attach(port: u16) -> WebServer {
        WebServer {
            child: None,
            program: String::new(),
            port,
            log: PathBuf::new(),
        }
    }

    /// What the log holds so far (empty if it cannot be read).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A URL of this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        // A server that went away during the test fails it (unless it is failing already).
        if let Some(status) = stop(child)
            && !std::thread::panicking()
        {
            panic!(
                "{} exited ({status}) before it was stopped: {}",
                self.program,
                self.log_text()
            );
        }
    }
}

/// Stops a process: SIGTERM, then SIGKILL if it is still there after 5 s. A process that had
/// already exited (and was reaped here, so its PID may be another process's now) is not
/// signalled: its exit status is returned.
pub fn stop(child: &mut Child) -> Option<std::process::ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A port nothing listens on now, and that no other test of this run was given. The tests run
/// in processes of their own, in parallel, and a server started by a test binds its port some
/// time after this returns. So the port is taken below the kernel's ephemeral range (where no
/// socket bound to port 0 and no outgoing connection can take it in between), and reserved with
/// a file in a directory the tests share. Kernel-chosen ports collided twice in CI: another
/// test's server answered on this test's port.
/// Reservations older than ten minutes (the whole suite takes two) are from earlier runs.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    /// Below Linux's default ephemeral range (32768-60999).
    const PORTS: std::ops::Range<u16> = 20_000..32_768;
    let reserved = std::env::temp_dir().join("gateway-test-ports");
    let _ = std::fs::create_dir_all(&reserved);
    let random = RandomState::new();
    for attempt in 0u64.. {
        let span = u64::from(PORTS.end - PORTS.start);
        let port = PORTS.start + (random.hash_one(attempt) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let file = reserved.join(port.to_string());
        let stale = std::fs::metadata(&file)
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(600));
        if stale {
            let _ = std::fs::remove_file(&file);
        }
        let fresh = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file);
        // (Should the directory be unusable, the port goes unreserved.)
        if fresh.is_ok() || attempt >= 1000 {
            return port;
        }
    }
    unreachable!("the loop returns")
}

/// What curl got: the status, the headers (lower-cased names) and the body.
pub struct Fetched {
    /// The status.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Fetched {
    /// A header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Runs curl with `args` (and `stdin`), returning the last response it got.
pub fn curl(args: &[&str], stdin: Option<&[u8]>) -> Fetched {
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
pub fn check_front_end(
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

    // Read to the end of the connection: nothing may follow the head.
    let (head, rest) = exchange_raw(
        server.port,
        format!(
            "HEAD {script_url}/h HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            server.port
        )
        .as_bytes(),
    );
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(
        header_of(&head, "content-type").as_deref(),
        Some("application/json"),
        "{head}"
    );
    assert!(
        rest.is_empty(),
        "a body after the head of a HEAD answer: {head}\r\n\r\n{}",
        String::from_utf8_lossy(&rest)
    );
    if passes_length {
        assert!(
            header_of(&head, "content-length").is_some_and(|l| l != "0"),
            "HEAD keeps the length: {head}"
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

/// Checks that nginx keeps its FastCGI connections to the echo program behind `script_url`
/// (`fastcgi_keep_conn on` with `keepalive`) from one request to the next, by the connections
/// echo's stats endpoint on `stats` counts: [`check_front_end`] runs twice, and the second run
/// opens one connection, for the request after its HEAD, and none for the others. nginx (1.22)
/// ends a HEAD request as soon as the response head is in, without reading on to the FastCGI
/// END_REQUEST record that would let it keep the connection, and closes that connection.
pub fn check_nginx_fastcgi_reuse(server: &WebServer, stats: u16, script_url: &str) {
    check_front_end(server, script_url, script_url, true, true);
    let kept = Counted::during(stats, || {
        check_front_end(server, script_url, script_url, true, true);
    });
    assert!(kept.requests > 0 && kept.connections == 1, "{kept:?}");
    // The one connection is the HEAD's doing.
    let url = server.url(&format!("{script_url}/x"));
    let get = || assert_eq!(curl(&[&url], None).status, 200);
    let head = || assert_eq!(curl(&["-I", &url], None).status, 200);
    let after_get = Counted::during(stats, || {
        get();
        get();
    });
    assert_eq!(after_get.connections, 0, "a GET after a GET: {after_get:?}");
    let after_head = Counted::during(stats, || {
        head();
        get();
    });
    assert_eq!(
        after_head.connections, 1,
        "a GET after a HEAD: {after_head:?}"
    );
}

/// Starts Apache (Debian's `apache2`, event MPM, as `nobody`) on a free port, serving from
/// `dir`, with the extra `modules` (names as in `mod_NAME.so`) and `directives`, in the
/// foreground; its logs go to `dir`.
pub fn start_apache(dir: &Path, modules: &[&str], directives: &str) -> WebServer {
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let port = free_port();
    let root = dir.display();
    let path = "/usr/lib/apache2/modules";
    let mut config = format!(
        "ServerRoot \"{root}\"\n\
         DefaultRuntimeDir \"{root}/logs\"\n\
         PidFile \"{root}/httpd.pid\"\n\
         ErrorLog \"{root}/error.log\"\n\
         Listen 127.0.0.1:{port}\n\
         ServerName localhost\n\
         LoadModule mpm_event_module {path}/mod_mpm_event.so\n\
         LoadModule authz_core_module {path}/mod_authz_core.so\n\
         User nobody\n\
         Group nogroup\n\
         DocumentRoot \"{root}\"\n"
    );
    for module in modules {
        config.push_str(&format!(
            "LoadModule {module}_module {path}/mod_{module}.so\n"
        ));
    }
    config.push_str(directives);
    let conf = dir.join("httpd.conf");
    std::fs::write(&conf, config).unwrap();
    WebServer::start(
        "/usr/sbin/apache2",
        &["-f", conf.to_str().unwrap(), "-DFOREGROUND"],
        port,
        dir.join("error.log"),
    )
}

/// Starts nginx (Debian's) with `http` as the body of its `http` block (after the temporary
/// paths it needs in `dir`), in the foreground; waits until `port` (one it listens on) is up.
pub fn start_nginx(dir: &Path, port: u16, http: &str) -> WebServer {
    let root = dir.display();
    for temp in ["cb", "ut", "pt", "ft", "st"] {
        std::fs::create_dir_all(dir.join(temp)).unwrap();
    }
    let config = format!(
        "worker_processes 1;\n\
         error_log {root}/error.log;\n\
         pid {root}/nginx.pid;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {root}/cb; uwsgi_temp_path {root}/ut; proxy_temp_path {root}/pt;\n\
           fastcgi_temp_path {root}/ft; scgi_temp_path {root}/st;\n\
           {http}\n\
         }}\n"
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config).unwrap();
    let args = [
        "-p",
        dir.to_str().unwrap(),
        "-c",
        conf.to_str().unwrap(),
        "-g",
        "daemon off;",
    ];
    WebServer::start("/usr/sbin/nginx", &args, port, dir.join("error.log"))
}

/// Starts lighttpd on a free port with `dir/docroot` as its document root (created) and
/// `config` (modules and their settings) after the server settings, in the foreground.
pub fn start_lighttpd(dir: &Path, config: &str) -> WebServer {
    std::fs::create_dir_all(dir.join("docroot")).unwrap();
    let port = free_port();
    let root = dir.display();
    let config = format!(
        "server.document-root = \"{root}/docroot\"\n\
         server.bind = \"127.0.0.1\"\n\
         server.port = {port}\n\
         server.pid-file = \"{root}/l.pid\"\n\
         server.errorlog = \"{root}/error.log\"\n\
         {config}"
    );
    let conf = dir.join("lighttpd.conf");
    std::fs::write(&conf, config).unwrap();
    WebServer::start(
        "/usr/sbin/lighttpd",
        &["-D", "-f", conf.to_str().unwrap()],
        port,
        dir.join("error.log"),
    )
}

/// Waits (15 s at most) until something accepts connections on `port`.
pub fn wait_for(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One GET on a new connection (`Connection: close`, `Host: test`, then `headers`, each line
/// ending in CRLF): the status and the whole answer as text, or what went wrong.
pub fn try_get(port: u16, path: &str, headers: &str) -> Result<(u16, String), String> {
    use std::io::Read;
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\n{headers}Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).map_err(|e| e.to_string())?;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {reply:?}"))?;
    Ok((status, reply))
}

/// The backend that answered a raw answer: its `X-Upstream` header (nginx configurations of
/// the tests set it) or its `X-Backend` header (the `balancer` program's), else empty.
pub fn backend_of(reply: &str) -> String {
    header_of(reply, "x-upstream")
        .or_else(|| header_of(reply, "x-backend"))
        .unwrap_or_default()
}

/// One GET on a new connection: the status and the backend that answered ([`backend_of`]).
pub fn get_backend(port: u16, path: &str, headers: &str) -> Result<(u16, String), String> {
    let (status, reply) = try_get(port, path, headers)?;
    Ok((status, backend_of(&reply)))
}

/// How many of `n` GETs of `/` each backend answered; every answer must be 200.
pub fn spread(port: u16, n: usize, headers: &str) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let (status, backend) = get_backend(port, "/", headers).unwrap();
        assert_eq!(status, 200);
        *counts.entry(backend).or_insert(0) += 1;
    }
    counts
}

/// A header of a raw answer (the first of that name, any case), trimmed.
pub fn header_of(reply: &str, wanted: &str) -> Option<String> {
    reply
        .split("\r\n\r\n")
        .next()?
        .lines()
        .skip(1)
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case(wanted)
                .then(|| value.trim().to_owned())
        })
}

/// One GET on a new connection (`Connection: close`); the whole raw answer.
pub fn http_get(port: u16, path: &str) -> Vec<u8> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    reply
}

/// One request over TCP to `port` (the whole of `request`, which asks for `Connection: close`),
/// every read and write bounded (a server that keeps the connection open fails the test): the
/// head up to the blank line, and every byte after it as it came.
pub fn exchange_raw(port: u16, request: &[u8]) -> (String, Vec<u8>) {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .unwrap_or_else(|e| panic!("reading the response: {e}"));
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {}", String::from_utf8_lossy(&response)));
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    (head, response[split + 4..].to_vec())
}

/// [`exchange_raw`], with a body the server chunked de-chunked.
pub fn exchange(port: u16, request: &[u8]) -> (String, Vec<u8>) {
    let (head, body) = exchange_raw(port, request);
    let chunked =
        header_of(&head, "transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
    if chunked {
        return (head, dechunk(&body));
    }
    (head, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size = std::str::from_utf8(&data[..line_end]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// The status of a response head (0 if it has none).
pub fn status_of(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// What the stats endpoint of a server of the workspace (`--stats`) counted so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// Connections accepted (`gateway_connections_total`).
    pub connections: u64,
    /// Requests answered (`gateway_requests_total`).
    pub requests: u64,
}

impl Counted {
    /// What the stats endpoint on `port` counted so far, from `GET /metrics`.
    pub fn scrape(port: u16) -> Counted {
        let (status, reply) = try_get(port, "/metrics", "").unwrap();
        assert_eq!(status, 200, "{reply}");
        let sample = |name: &str| -> u64 {
            reply
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {reply}"))
        };
        Counted {
            connections: sample("gateway_connections_total"),
            requests: sample("gateway_requests_total"),
        }
    }

    /// What the stats endpoint on `port` counted while `run` ran.
    pub fn during(port: u16, run: impl FnOnce()) -> Counted {
        let before = Counted::scrape(port);
        run();
        let after = Counted::scrape(port);
        Counted {
            connections: after.connections - before.connections,
            requests: after.requests - before.requests,
        }
    }
}

/// The absolute path of the interpreter `python3` on `PATH` runs (not a version manager's shim,
/// so a process started with it is the interpreter itself and can be stopped by its PID), after
/// checking that it can import `modules`.
pub fn python3_with(modules: &[&str]) -> String {
    let mut code = String::from("import sys\n");
    for module in modules {
        code.push_str(&format!("import {module}\n"));
    }
    code.push_str("print(sys.executable)");
    let output = Command::new("python3")
        .args(["-c", &code])
        .output()
        .expect("python3: run scripts/install-test-deps.sh");
    assert!(
        output.status.success(),
        "python3 cannot import {modules:?} (run scripts/install-test-deps.sh): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A program started in its own process group (so that a master and its workers go
/// together), its stderr collected; the whole group is killed when dropped.
pub struct Group {
    pub child: Child,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Group {
    /// Starts `program` with `args` (and `RUST_LOG=info`), in a new process group.
    pub fn spawn(program: &str, args: &[&str]) -> Group {
        Group::command(Command::new(program).args(args))
    }

    /// Starts `command` (with `RUST_LOG=info`, no `GATEWAY_INTERFACE`), in a new process group.
    /// `NO_COLOR` is left as it is: the launcher colors its log only on a terminal, and the
    /// log here goes to a pipe.
    pub fn command(command: &mut Command) -> Group {
        use std::io::Read;
        use std::os::unix::process::CommandExt;
        let mut child = command
            .env_remove("GATEWAY_INTERFACE")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Group { child, log }
    }

    /// The pid of the program (the master, with workers).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the program wrote on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// The live (not zombie) children of `pid`, from `/proc/*/stat`.
pub fn children_of(pid: u32) -> std::collections::HashSet<u32> {
    let mut found = std::collections::HashSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after its `)`.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) && state != Some("Z") {
            found.insert(child);
        }
    }
    found
}

/// `VmRSS` of a process in KiB, from `/proc/PID/status`.
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Raises this process's soft limit of open files to at least `wanted` (up to the hard
/// limit), with util-linux's `prlimit`; the soft limit after.
pub fn raise_nofile(wanted: u64) -> u64 {
    let soft = || -> u64 {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        line.split_whitespace()
            .nth(3)
            .unwrap()
            .parse()
            .unwrap_or(u64::MAX)
    };
    if soft() < wanted {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let hard = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(4))
            .unwrap_or("unlimited")
            .to_owned();
        let _ = Command::new("prlimit")
            .args([
                "--pid",
                &std::process::id().to_string(),
                &format!("--nofile={wanted}:{hard}"),
            ])
            .status();
    }
    soft()
}

/// Waits until `done`, at most `within`; panics naming `what` past it.
pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes an authority (`ca.pem`) and a client certificate it signed with its key
/// (`client.pem`, `client-key.pem`) into `dir`, for `--tls-client-ca`: their paths, in that
/// order.
#[allow(dead_code)]
pub fn client_certificate_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let authority =
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["client".to_owned()])
        .unwrap()
        .signed_by(&key, &authority)
        .unwrap();
    let files = (
        dir.join("ca.pem"),
        dir.join("client.pem"),
        dir.join("client-key.pem"),
    );
    std::fs::write(&files.0, authority.pem()).unwrap();
    std::fs::write(&files.1, cert.pem()).unwrap();
    std::fs::write(&files.2, key.serialize_pem()).unwrap();
    files
}
