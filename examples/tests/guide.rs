//! The user guide (`docs/guide/`) cannot rot: every web-server configuration of it is read from
//! `docs/guide/configs/`, its placeholders (`@PORT@`, `@BACKEND_PORT@`, `@SOCKET@`, `@DIR@`,
//! `@ECHO@`, ...) are filled in, the real server (nginx, Apache, lighttpd, HAProxy, systemd's
//! socket activation) is started with it in front of the `echo` program, and requests go
//! through it. The pages' excerpts of those files must match the files; the commands of the
//! pages that start programs are run; the reference page lists every flag `--help` prints,
//! with its default.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    ECHO, TempDir, WebServer, check_front_end, curl, free_port, install_script, set_mode,
    sha256_hex, start_apache, start_lighttpd, start_nginx,
};

const AUTHORIZER: &str = env!("CARGO_BIN_EXE_authorizer");
const BALANCER: &str = env!("CARGO_BIN_EXE_balancer");
const HELLO: &str = env!("CARGO_BIN_EXE_hello");

/// The guide's directory.
fn guide() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/guide")
}

/// Every configuration file of the guide, and the test below that starts a server with it.
const CONFIGS: &[&str] = &[
    "apache-cgi.conf",
    "apache-proxy-fcgi.conf",
    "apache-proxy-uwsgi.conf",
    "gateway.service",
    "gateway.socket",
    "haproxy-tcp.cfg",
    "lighttpd-authorizer.conf",
    "lighttpd-cgi.conf",
    "lighttpd-fastcgi.conf",
    "lighttpd-spawn.conf",
    "nginx-fastcgi-tcp.conf",
    "nginx-fastcgi-unix.conf",
    "nginx-proxy.conf",
    "nginx-upstreams.conf",
    "nginx-uwsgi.conf",
];

/// The pages of the guide.
const PAGES: &[&str] = &[
    "README.md",
    "01-writing-an-app.md",
    "02-writing-middleware.md",
    "03-deploying.md",
    "04-beyond-one-machine.md",
    "05-conformance.md",
    "06-reference.md",
];

fn page(name: &str) -> String {
    std::fs::read_to_string(guide().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The configuration file `name` with its placeholders replaced; every placeholder must be
/// given, and every one given must be used.
fn config(name: &str, values: &[(&str, String)]) -> String {
    let mut text = std::fs::read_to_string(guide().join("configs").join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    for (placeholder, value) in values {
        let marker = format!("@{placeholder}@");
        assert!(text.contains(&marker), "{name} has no {marker}");
        text = text.replace(&marker, value);
    }
    let left =
        text.split('@').skip(1).step_by(2).find(|word| {
            !word.is_empty() && word.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        });
    assert!(
        left.is_none(),
        "{name}: @{}@ was not replaced",
        left.unwrap()
    );
    text
}

/// A program the test started, stopped (SIGTERM, then SIGKILL) when dropped.
struct Process(Child);

impl Process {
    fn start(program: &str, args: &[&str]) -> Process {
        Process(
            Command::new(program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{program}: {e}")),
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        common::stop(&mut self.0);
    }
}

/// `program args` on TCP `port`, once it accepts connections.
fn tcp_program(program: &str, args: &[&str], port: u16, dir: &TempDir) -> WebServer {
    let log = dir.0.join(format!("program-{port}.log"));
    WebServer::start(program, args, port, log)
}

/// `echo --PROTOCOL 127.0.0.1:PORT`.
fn echo(protocol: &str, port: u16, dir: &TempDir) -> WebServer {
    let address = format!("127.0.0.1:{port}");
    tcp_program(ECHO, &[&format!("--{protocol}"), &address], port, dir)
}

/// Waits (15 s at most) until something accepts connections on the Unix socket `path`.
fn wait_for_socket(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {path:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// nginx with a guide file as the body of its `http {}` block; the files `include` Debian's
/// `fastcgi_params` and `uwsgi_params` by relative name, as under `/etc/nginx`.
fn nginx(dir: &TempDir, port: u16, http: &str) -> WebServer {
    for params in ["fastcgi_params", "uwsgi_params"] {
        std::fs::copy(Path::new("/etc/nginx").join(params), dir.0.join(params)).unwrap_or_else(
            |e| panic!("/etc/nginx/{params}: {e} (run scripts/install-test-deps.sh)"),
        );
    }
    start_nginx(&dir.0, port, http)
}

/// Apache with a guide file: the modules from its `# a2enmod ...` line, the file as directives.
fn apache(dir: &TempDir, conf: &str) -> WebServer {
    let modules: Vec<&str> = conf
        .lines()
        .find_map(|line| line.strip_prefix("# a2enmod "))
        .expect("an `# a2enmod` line")
        .split_whitespace()
        .collect();
    start_apache(&dir.0, &modules, conf)
}

/// A GET of `path` through `server`: the environ echo saw.
fn environ(server: &WebServer, path: &str) -> serde_json::Value {
    let fetched = curl(&[&server.url(path)], None);
    assert_eq!(fetched.status, 200, "{path}");
    fetched.json()["environ"].clone()
}

/// The split every mounted config makes (SCRIPT_NAME the mount, PATH_INFO the rest), and the
/// variables of the front end's column of the reference's environ table.
fn check_split(server: &WebServer, mount: &str, column: &str) {
    let e = environ(server, &format!("{mount}/a/b?x=1"));
    assert_eq!(e["SCRIPT_NAME"], mount, "{e}");
    assert_eq!(e["PATH_INFO"], "/a/b", "{e}");
    assert_eq!(e["QUERY_STRING"], "x=1", "{e}");
    check_environ_column(&e, column);
}

/// The variables echo saw, against the column of the reference's table: every CGI-style name,
/// less the `HTTP_*` headers, the body's `CONTENT_*` (described in the page's notes) and what
/// Apache passes from its own environment.
fn check_environ_column(environ: &serde_json::Value, column: &str) {
    let seen: std::collections::BTreeSet<&str> = environ
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|k| k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .filter(|k| !k.starts_with("HTTP_") && !k.starts_with("CONTENT_"))
        .filter(|k| !["PATH", "LD_LIBRARY_PATH"].contains(k))
        .collect();
    let reference = page("06-reference.md");
    let mut rows = reference.lines().skip_while(|l| !l.starts_with("| key |"));
    let header: Vec<&str> = rows.next().expect("the environ table").split('|').collect();
    let at = header
        .iter()
        .position(|cell| cell.trim() == column)
        .unwrap_or_else(|| panic!("no column {column:?} in the environ table"));
    let listed: std::collections::BTreeSet<&str> = rows
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .filter(|row| row.split('|').nth(at).is_some_and(|c| c.trim() == "✓"))
        .map(|row| row.split('|').nth(1).unwrap().trim().trim_matches('`'))
        .collect();
    assert_eq!(
        seen, listed,
        "06-reference.md, column {column:?}: what echo saw (left) and the table (right)"
    );
}

/// A chunked POST through `server` to `path`: the whole body arrives, with a `CONTENT_LENGTH`
/// when the front end de-chunks it (the reference's note on chunked bodies).
fn check_chunked_length(server: &WebServer, path: &str, length: bool) {
    let body = vec![b'c'; 10_000];
    let fetched = curl(
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "@-",
            &server.url(path),
        ],
        Some(&body),
    );
    let json = fetched.json();
    assert_eq!(json["body_len"], 10_000);
    let declared = json["environ"].get("CONTENT_LENGTH").cloned();
    if length {
        assert_eq!(declared, Some("10000".into()), "{json}");
    } else {
        assert_eq!(declared, None, "{json}");
    }
}

#[test]
fn nginx_fastcgi_over_tcp() {
    let dir = TempDir::new("guide-nginx-fastcgi-tcp");
    let (port, backend) = (free_port(), free_port());
    let _echo = echo("fastcgi", backend, &dir);
    let conf = config(
        "nginx-fastcgi-tcp.conf",
        &[
            ("PORT", port.to_string()),
            ("BACKEND_PORT", backend.to_string()),
        ],
    );
    let server = nginx(&dir, port, &conf);
    check_split(&server, "/app", "nginx FastCGI");
    check_chunked_length(&server, "/app/c", true);
    check_front_end(&server, "/app", "/app", true, true);
}

#[test]
fn nginx_fastcgi_over_a_unix_socket() {
    let dir = TempDir::new("guide-nginx-fastcgi-unix");
    let port = free_port();
    let socket = dir.0.join("echo.sock");
    let bind = format!("unix:{}", socket.display());
    let stats = free_port();
    let _echo = Process::start(
        ECHO,
        &[
            "--fastcgi",
            &bind,
            "--socket-mode",
            "666",
            "--fastcgi-mount",
            "/app",
            "--stats",
            &format!("127.0.0.1:{stats}"),
        ],
    );
    wait_for_socket(&socket);
    common::wait_for(stats);
    let conf = config(
        "nginx-fastcgi-unix.conf",
        &[
            ("PORT", port.to_string()),
            ("SOCKET", socket.display().to_string()),
        ],
    );
    let server = nginx(&dir, port, &conf);
    check_split(&server, "/app", "nginx FastCGI");
    common::check_nginx_fastcgi_reuse(&server, stats, "/app");
}

#[test]
fn nginx_uwsgi() {
    let dir = TempDir::new("guide-nginx-uwsgi");
    let (port, backend) = (free_port(), free_port());
    let _echo = echo("uwsgi", backend, &dir);
    let conf = config(
        "nginx-uwsgi.conf",
        &[
            ("PORT", port.to_string()),
            ("BACKEND_PORT", backend.to_string()),
        ],
    );
    let server = nginx(&dir, port, &conf);
    check_split(&server, "/app", "nginx uwsgi");
    check_chunked_length(&server, "/app/c", true);
    check_front_end(&server, "/app", "/app", true, true);
}

#[test]
fn nginx_http_proxy() {
    let dir = TempDir::new("guide-nginx-proxy");
    let (port, backend) = (free_port(), free_port());
    let _echo = echo("http", backend, &dir);
    let conf = config(
        "nginx-proxy.conf",
        &[
            ("PORT", port.to_string()),
            ("BACKEND_PORT", backend.to_string()),
        ],
    );
    let server = nginx(&dir, port, &conf);
    let e = environ(&server, "/a/b?x=1");
    assert_eq!(e["PATH_INFO"], "/a/b", "{e}");
    check_environ_column(&e, "built-in HTTP");
    assert_eq!(e["HTTP_X_FORWARDED_FOR"], "127.0.0.1", "{e}");
    assert_eq!(e["HTTP_X_FORWARDED_PROTO"], "http", "{e}");
    check_front_end(&server, "", "", true, true);
}

#[test]
fn apache_mod_proxy_fcgi() {
    let dir = TempDir::new("guide-apache-proxy-fcgi");
    let backend = free_port();
    let _echo = echo("fastcgi", backend, &dir);
    let conf = config(
        "apache-proxy-fcgi.conf",
        &[("BACKEND_PORT", backend.to_string())],
    );
    let server = apache(&dir, &conf);
    check_split(&server, "/app", "Apache FastCGI");
    // Apache 2.4.59 and later drop a FastCGI response's Content-Length (CVE-2024-24795).
    check_front_end(&server, "/app", "/app", true, false);
}

#[test]
fn apache_mod_proxy_uwsgi() {
    let dir = TempDir::new("guide-apache-proxy-uwsgi");
    let backend = free_port();
    let _echo = echo("uwsgi", backend, &dir);
    let conf = config(
        "apache-proxy-uwsgi.conf",
        &[("BACKEND_PORT", backend.to_string())],
    );
    let server = apache(&dir, &conf);
    check_split(&server, "/app", "Apache uwsgi");
    // mod_proxy_uwsgi refuses chunked request bodies (411).
    check_front_end(&server, "/app", "/app", false, true);
}

#[test]
fn apache_cgi() {
    let dir = TempDir::new("guide-apache-cgi");
    let cgi_bin = dir.0.join("cgi-bin");
    std::fs::create_dir(&cgi_bin).unwrap();
    set_mode(&cgi_bin, 0o755);
    install_script(&cgi_bin, "echo");
    let conf = config("apache-cgi.conf", &[("DIR", dir.0.display().to_string())]);
    // What Debian's cgid.conf sets (the test's Apache has no mods-enabled).
    let conf = format!("{conf}\nScriptSock \"{}/cgisock\"\n", dir.0.display());
    let server = apache(&dir, &conf);
    check_split(&server, "/cgi-bin/echo", "Apache CGI");
    check_chunked_length(&server, "/cgi-bin/echo/c", false);
    check_front_end(&server, "/cgi-bin/echo", "/cgi-bin/echo", true, false);
}

#[test]
fn lighttpd_fastcgi() {
    let dir = TempDir::new("guide-lighttpd-fastcgi");
    let backend = free_port();
    let _echo = echo("fastcgi", backend, &dir);
    let conf = config(
        "lighttpd-fastcgi.conf",
        &[("BACKEND_PORT", backend.to_string())],
    );
    let server = start_lighttpd(&dir.0, &conf);
    check_split(&server, "/app", "lighttpd FastCGI");
    check_chunked_length(&server, "/app/c", true);
    check_front_end(&server, "/app", "/app", true, true);
}

#[test]
fn lighttpd_fastcgi_authorizer() {
    let dir = TempDir::new("guide-lighttpd-authorizer");
    let (auth, backend) = (free_port(), free_port());
    let auth_address = format!("127.0.0.1:{auth}");
    let _authorizer = tcp_program(
        AUTHORIZER,
        &["--fastcgi", &auth_address, "--fastcgi-roles", "authorizer"],
        auth,
        &dir,
    );
    let _echo = echo("uwsgi", backend, &dir);
    let conf = config(
        "lighttpd-authorizer.conf",
        &[
            ("AUTH_PORT", auth.to_string()),
            ("BACKEND_PORT", backend.to_string()),
        ],
    );
    let server = start_lighttpd(&dir.0, &conf);
    let denied = curl(&[&server.url("/app/x")], None);
    assert_eq!(denied.status, 401);
    assert_eq!(
        denied.header("www-authenticate"),
        Some("Token realm=\"gateway\"")
    );
    let refused = curl(&["-H", "X-Token: guess", &server.url("/app/x")], None);
    assert_eq!(refused.status, 403);
    let allowed = curl(
        &["-H", "X-Token: open-sesame", &server.url("/app/x?q=1")],
        None,
    );
    assert_eq!(allowed.status, 200);
    let e = allowed.json()["environ"].clone();
    assert_eq!(e["AUTH_USER"], "friend", "{e}");
    assert_eq!(e["PATH_INFO"], "/x", "{e}");
    assert_eq!(e["QUERY_STRING"], "q=1", "{e}");
}

#[test]
fn lighttpd_spawn_mode() {
    let dir = TempDir::new("guide-lighttpd-spawn");
    let conf = config(
        "lighttpd-spawn.conf",
        &[
            ("DIR", dir.0.display().to_string()),
            ("ECHO", ECHO.to_owned()),
        ],
    );
    let server = start_lighttpd(&dir.0, &conf);
    check_split(&server, "/app", "lighttpd FastCGI");
    check_front_end(&server, "/app", "/app", true, true);
}

#[test]
fn lighttpd_cgi() {
    let dir = TempDir::new("guide-lighttpd-cgi");
    std::fs::create_dir_all(dir.0.join("docroot")).unwrap();
    install_script(&dir.0.join("docroot"), "echo.cgi");
    let conf = config("lighttpd-cgi.conf", &[]);
    let server = start_lighttpd(&dir.0, &conf);
    check_split(&server, "/echo.cgi", "lighttpd CGI");
    check_front_end(&server, "/echo.cgi", "/echo.cgi", true, true);
}

/// The value of `key=` in the `[section]` of a unit file.
fn unit_value<'u>(unit: &'u str, section: &str, key: &str) -> Vec<&'u str> {
    let mut current = "";
    let mut values = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            current = line;
        } else if current == format!("[{section}]")
            && let Some(value) = line.strip_prefix(key).and_then(|r| r.strip_prefix('='))
        {
            values.push(value);
        }
    }
    values
}

#[test]
fn systemd_socket_activation() {
    let dir = TempDir::new("guide-systemd");
    let port = free_port();
    let values = [("PORT", port.to_string())];
    let socket = config("gateway.socket", &values);
    let service = config("gateway.service", &[("ECHO", ECHO.to_owned())]);
    std::fs::write(dir.0.join("gateway.socket"), &socket).unwrap();
    std::fs::write(dir.0.join("gateway.service"), &service).unwrap();

    // systemd itself finds nothing wrong with the units.
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.0.join("gateway.socket"))
        .arg(dir.0.join("gateway.service"))
        .output()
        .expect("systemd-analyze: run scripts/install-test-deps.sh");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // What systemd does, by systemd-socket-activate: listen on ListenStream, start ExecStart
    // with the socket as fd 3 and LISTEN_FDS=1, LISTEN_PID its own pid, and Environment=.
    let listen = unit_value(&socket, "Socket", "ListenStream");
    assert_eq!(listen, [format!("127.0.0.1:{port}").as_str()]);
    let exec = unit_value(&service, "Service", "ExecStart");
    assert_eq!(exec.len(), 1);
    let mut args = vec!["-l".to_owned(), listen[0].to_owned()];
    for env in unit_value(&service, "Service", "Environment") {
        args.extend(["-E".to_owned(), env.to_owned()]);
    }
    args.extend(exec[0].split_whitespace().map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = tcp_program("/usr/bin/systemd-socket-activate", &args, port, &dir);
    for _ in 0..4 {
        check_split_root(&server);
    }
    check_chunked_length(&server, "/c", false);
    let post = curl(
        &["--data-binary", "@-", &server.url("/upload")],
        Some(b"hello"),
    );
    assert_eq!(post.json()["body_len"], 5);
    assert_eq!(post.json()["body_sha256"], sha256_hex(b"hello"));
}

fn check_split_root(server: &WebServer) {
    let e = environ(server, "/a/b?x=1");
    assert_eq!(e["SCRIPT_NAME"], "", "{e}");
    assert_eq!(e["PATH_INFO"], "/a/b", "{e}");
    assert_eq!(e["SERVER_PORT"], server.port.to_string(), "{e}");
    check_environ_column(&e, "built-in HTTP");
}

/// Four clients sending GETs to `port` while `during` runs, each of a path of its own; returns
/// (served: answered 200 with an echo of that path, failures, the slowest answer).
fn under_load(port: u16, during: impl FnOnce()) -> (usize, Vec<String>, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let served = Arc::new(AtomicUsize::new(0));
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (stop, failed, served, slowest) = (
                stop.clone(),
                failed.clone(),
                served.clone(),
                slowest.clone(),
            );
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let path = format!("/load/{client}/{n}");
                    let started = Instant::now();
                    // (The client's read timeout, 10 s, bounds each GET.)
                    match common::try_get(port, &path, "") {
                        Ok((200, reply)) if reply.contains(&format!("\"{path}\"")) => {
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok((status, reply)) => failed.lock().unwrap().push(format!(
                            "{status} from {:?} for {path}",
                            common::backend_of(&reply)
                        )),
                        Err(error) => failed.lock().unwrap().push(error),
                    }
                    let took = started.elapsed();
                    let mut slowest = slowest.lock().unwrap();
                    *slowest = (*slowest).max(took);
                }
            })
        })
        .collect();
    during();
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    let slowest = *slowest.lock().unwrap();
    (served.load(Ordering::SeqCst), failed, slowest)
}

#[test]
fn nginx_upstreams_fail_over_when_a_backend_dies_under_load() {
    let dir = TempDir::new("guide-nginx-upstreams");
    let port = free_port();
    let ports = [free_port(), free_port(), free_port()];
    let mut echoes: Vec<WebServer> = ports.iter().map(|&p| echo("http", p, &dir)).collect();
    let conf = config(
        "nginx-upstreams.conf",
        &[
            ("PORT", port.to_string()),
            ("BACKEND_PORT_1", ports[0].to_string()),
            ("BACKEND_PORT_2", ports[1].to_string()),
            ("BACKEND_PORT_3", ports[2].to_string()),
        ],
    );
    let server = nginx(&dir, port, &conf);
    check_front_end(&server, "", "", true, true);
    let before = common::spread(port, 30, "");
    assert_eq!(before.len(), 3, "round robin over the three: {before:?}");
    assert!(before.values().all(|&n| n == 10), "{before:?}");

    // nginx logs each failed attempt with the upstream's URL, and X-Upstream ($upstream_addr)
    // names every upstream a request tried, the failed ones first.
    let killed = format!("127.0.0.1:{}", ports[1]);
    let attempts = || {
        let url = format!("upstream: \"http://{killed}/");
        server.log_text().matches(&url).count()
    };
    let (served, failed, slowest) = under_load(port, || {
        std::thread::sleep(Duration::from_millis(500));
        echoes[1].kill();
        std::thread::sleep(Duration::from_millis(1500));
        // Its first failure took it out (max_fails=1) for the 10 s of fail_timeout: neither
        // these GETs (a third of them its turn) nor the load try it again.
        let logged = attempts();
        assert!(
            logged > 0,
            "no failed attempt logged: {}",
            server.log_text()
        );
        let after = common::spread(port, 12, "");
        assert!(
            after.keys().all(|tried| !tried.contains(&killed)),
            "the killed backend was tried: {after:?}"
        );
        assert_eq!(after.len(), 2, "{after:?}");
        assert_eq!(
            attempts(),
            logged,
            "failed attempts on it went on being logged"
        );
    });
    assert!(
        failed.is_empty(),
        "{} of {} GETs failed: {:?}",
        failed.len(),
        failed.len() + served,
        &failed[..failed.len().min(5)]
    );
    assert!(served > 50, "the load ran: {served}");
    eprintln!("nginx upstreams: {served} GETs, none failed, slowest {slowest:?}");
}

/// `GET /who` through `port` from curl's local port `from`, with `extra` curl flags: the
/// environ echo saw.
fn environ_from(port: u16, from: u16, extra: &[&str]) -> serde_json::Value {
    let url = format!("http://127.0.0.1:{port}/who");
    let from = from.to_string();
    let mut args = vec!["--local-port", &from];
    args.extend_from_slice(extra);
    args.push(&url);
    let fetched = curl(&args, None);
    assert_eq!(
        fetched.status,
        200,
        "{}",
        String::from_utf8_lossy(&fetched.body)
    );
    fetched.json()["environ"].clone()
}

#[test]
fn haproxy_relays_tcp_with_the_proxy_protocol() {
    let dir = TempDir::new("guide-haproxy-tcp");
    let (port, v1, backend) = (free_port(), free_port(), free_port());
    let address = format!("127.0.0.1:{backend}");
    let _echo = tcp_program(
        ECHO,
        &["--http", &address, "--proxy-protocol"],
        backend,
        &dir,
    );
    let conf = config(
        "haproxy-tcp.cfg",
        &[
            ("PORT", port.to_string()),
            ("V1_PORT", v1.to_string()),
            ("BACKEND_PORT", backend.to_string()),
        ],
    );
    let path = dir.0.join("haproxy.cfg");
    std::fs::write(&path, conf).unwrap();
    let _haproxy = WebServer::start(
        "/usr/sbin/haproxy",
        &["-db", "-f", path.to_str().unwrap()],
        port,
        dir.0.join("haproxy.log"),
    );
    common::wait_for(v1);
    for (front, extra, protocol) in [
        (port, &[][..], "HTTP/1.1"),
        (v1, &[][..], "HTTP/1.1"),
        (port, &["--http2-prior-knowledge"][..], "HTTP/2"),
        (v1, &["--http2-prior-knowledge"][..], "HTTP/2"),
    ] {
        // curl's own port, which HAProxy's connection to echo does not have.
        let from = free_port();
        let e = environ_from(front, from, extra);
        assert_eq!(e["REMOTE_ADDR"], "127.0.0.1", "{e}");
        assert_eq!(e["REMOTE_PORT"], from.to_string(), "{e}");
        assert_eq!(e["SERVER_PORT"], front.to_string(), "{e}");
        assert_eq!(e["SERVER_PROTOCOL"], protocol, "{e}");
    }
    // Straight to echo, with no header: closed without an answer (curl: empty reply).
    let direct = Command::new("curl")
        .args(["-s", "--max-time", "10", &format!("http://{address}/")])
        .output()
        .unwrap();
    assert_eq!(direct.status.code(), Some(52), "{direct:?}");
    // The server goes on.
    let from = free_port();
    assert_eq!(environ_from(v1, from, &[])["REMOTE_PORT"], from.to_string());
}

/// The commands of each `sh` block of a page that start one of the workspace's programs
/// (`target/debug/NAME ...`, a trailing `&` dropped), joined across `\` line ends, as argument
/// lists (program first).
fn command_blocks(page_text: &str) -> Vec<Vec<Vec<String>>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<Vec<String>>> = None;
    let mut pending = String::new();
    for line in page_text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None if trimmed == "```sh" => current = Some(Vec::new()),
                None => {}
            }
            continue;
        }
        let Some(block) = current.as_mut() else {
            continue;
        };
        pending.push_str(trimmed.trim_end_matches('\\'));
        pending.push(' ');
        if trimmed.ends_with('\\') {
            continue;
        }
        let command = std::mem::take(&mut pending);
        let command = command.split('#').next().unwrap_or("").trim();
        let command = command.trim_end_matches('&').trim();
        if command.starts_with("target/debug/") {
            block.push(command.split_whitespace().map(str::to_owned).collect());
        }
    }
    blocks
}

/// The commands of a page that start `program`.
fn commands(page_text: &str, program: &str) -> Vec<Vec<String>> {
    command_blocks(page_text)
        .into_iter()
        .flatten()
        .filter(|args| args[0] == format!("target/debug/{program}"))
        .collect()
}

/// The `127.0.0.1:PORT` addresses in `args` moved to free ports (the same port to the same free
/// port across calls); the argument list with the program's path.
fn relocate(
    args: &[String],
    ports: &mut BTreeMap<u16, u16>,
    binaries: &[(&str, &str)],
) -> (String, Vec<String>) {
    let program = binaries
        .iter()
        .find(|(name, _)| args[0] == format!("target/debug/{name}"))
        .map(|(_, path)| (*path).to_owned())
        .unwrap_or_else(|| panic!("unknown program {}", args[0]));
    let moved = args[1..]
        .iter()
        .map(|arg| {
            let Some(at) = arg.find("127.0.0.1:") else {
                return arg.clone();
            };
            let rest = &arg[at + "127.0.0.1:".len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let old: u16 = digits.parse().unwrap();
            let new = *ports.entry(old).or_insert_with(free_port);
            format!("{}127.0.0.1:{new}{}", &arg[..at], &rest[digits.len()..])
        })
        .collect();
    (program, moved)
}

#[test]
fn the_balancer_commands_of_the_guide_work() {
    let dir = TempDir::new("guide-balancer");
    let text = page("04-beyond-one-machine.md");
    let binaries = [("echo", ECHO), ("balancer", BALANCER)];
    let mut ports = BTreeMap::new();
    let mut running = Vec::new();
    let mut front = None;
    let block = command_blocks(&text)
        .into_iter()
        .find(|block| block.iter().any(|args| args[0] == "target/debug/balancer"))
        .expect("a block that starts the balancer");
    assert!(
        block.len() >= 4,
        "the block starts echo backends: {block:?}"
    );
    for args in &block {
        let (program, moved) = relocate(args, &mut ports, &binaries);
        let port: u16 = moved[1].rsplit(':').next().unwrap().parse().unwrap();
        let moved: Vec<&str> = moved.iter().map(String::as_str).collect();
        running.push(tcp_program(&program, &moved, port, &dir));
        if program == BALANCER {
            front = Some(port);
        }
    }
    let front = front.expect("the page starts the balancer");
    let counts = common::spread(front, 40, "");
    assert_eq!(counts.len(), 3, "every backend answers: {counts:?}");
    println!("balancer from the guide: {counts:?}");
    // One POST through each backend: the whole body arrives.
    let body: Vec<u8> = (0..30_000u32).map(|i| (i % 251) as u8).collect();
    for _ in 0..4 {
        let fetched = curl(
            &[
                "--data-binary",
                "@-",
                &format!("http://127.0.0.1:{front}/post?y=1"),
            ],
            Some(&body),
        );
        assert_eq!(fetched.status, 200);
        assert_eq!(fetched.json()["body_sha256"], sha256_hex(&body));
    }
}

#[test]
fn the_launcher_commands_of_the_deploying_page_work() {
    let dir = TempDir::new("guide-deploy-commands");
    let text = page("03-deploying.md");
    let binaries = [("echo", ECHO), ("hello", HELLO)];
    let mut ports = BTreeMap::new();
    let found = commands(&text, "echo");
    assert!(!found.is_empty());
    // An HTTPS command names its PEM files: it gets a certificate made here in their place,
    // and one with --tls-client-ca an authority, whose client certificate curl shows.
    let (cert, key) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let (ca, client, client_key) = common::client_certificate_files(&dir.0);
    for args in &found {
        let (program, mut moved) = relocate(args, &mut ports, &binaries);
        let (mut tls, mut client_auth) = (false, false);
        for at in 1..moved.len() {
            let file = match moved[at - 1].as_str() {
                "--tls-cert" => &cert,
                "--tls-key" => &key,
                "--tls-client-ca" => {
                    client_auth = true;
                    &ca
                }
                _ => continue,
            };
            moved[at] = file.to_str().unwrap().to_owned();
            tls = true;
        }
        let moved: Vec<&str> = moved.iter().map(String::as_str).collect();
        // Each serves on its first address; a unix: one is left out (it names a system path).
        let Some(port) = moved
            .iter()
            .find_map(|a| a.strip_prefix("127.0.0.1:"))
            .map(|p| p.parse::<u16>().unwrap())
        else {
            continue;
        };
        let running = tcp_program(&program, &moved, port, &dir);
        if moved.contains(&"--http") && tls {
            let resolve = format!("localhost:{port}:127.0.0.1");
            let url = format!("https://localhost:{port}/x");
            let mut args = vec!["--cacert", cert.to_str().unwrap(), "--resolve", &resolve];
            if client_auth {
                args.extend(["--cert", client.to_str().unwrap()]);
                args.extend(["--key", client_key.to_str().unwrap()]);
            }
            args.push(&url);
            let fetched = curl(&args, None);
            assert_eq!(fetched.status, 200, "{}", running.log_text());
            let e = &fetched.json()["environ"];
            assert_eq!(e["PATH_INFO"], "/x");
            assert_eq!(e["HTTPS"], "on");
            assert_eq!(e["wsgi.url_scheme"], "https");
            let verified = if client_auth { "SUCCESS" } else { "-" };
            assert_eq!(e["SSL_CLIENT_VERIFY"].as_str().unwrap_or("-"), verified);
        } else if moved.contains(&"--http") {
            let e = environ(&running, "/x");
            assert_eq!(e["PATH_INFO"], "/x");
        }
        if let Some(at) = moved.iter().position(|a| *a == "--stats") {
            let stats: u16 = moved[at + 1].rsplit(':').next().unwrap().parse().unwrap();
            common::wait_for(stats);
            // The counters are shared memory, updated as the request ends: poll a little.
            let deadline = Instant::now() + Duration::from_secs(5);
            let text = loop {
                let metrics = curl(&[&format!("http://127.0.0.1:{stats}/metrics")], None);
                assert_eq!(metrics.status, 200);
                let text = String::from_utf8_lossy(&metrics.body).into_owned();
                if text.contains("gateway_requests_total 1") || Instant::now() > deadline {
                    break text;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            assert!(text.contains("gateway_requests_total 1"), "{text}");
            assert!(text.contains("gateway_workers 2"), "{text}");
        }
        drop(running);
    }
}

/// Every flag `--help` prints, with its default when it has one.
fn help_flags() -> Vec<(String, Option<String>)> {
    let output = Command::new(ECHO).arg("--help").output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    let mut flags: Vec<(String, Option<String>)> = Vec::new();
    for line in help.lines().map(str::trim) {
        if let Some(rest) = line
            .strip_prefix("--")
            .or_else(|| line.strip_prefix("-h, --").map(|_| "help"))
        {
            let name = rest.split_whitespace().next().unwrap();
            flags.push((format!("--{name}"), None));
        } else if let Some(default) = line.strip_prefix("[default: ") {
            flags.last_mut().unwrap().1 = Some(default.trim_end_matches(']').to_owned());
        }
    }
    flags
}

#[test]
fn the_reference_lists_every_launcher_flag_with_its_default() {
    let reference = page("06-reference.md");
    let flags = help_flags();
    assert!(flags.len() > 20, "{flags:?}");
    for (flag, default) in &flags {
        // A table row: | `--flag ARG` | default | what | (the flag in the first cell: another
        // row's text may name it).
        let row = reference
            .lines()
            .find(|line| {
                line.strip_prefix("| `").is_some_and(|cell| {
                    cell.starts_with(&format!("{flag}`")) || cell.starts_with(&format!("{flag} "))
                })
            })
            .unwrap_or_else(|| panic!("06-reference.md has no row for {flag}"));
        if let Some(default) = default {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            assert!(
                cells
                    .get(2)
                    .is_some_and(|c| c.contains(&format!("`{default}`"))),
                "06-reference.md: {flag} defaults to {default}: {row}"
            );
        }
    }
    println!("reference: {} flags checked", flags.len());
}

/// The fenced blocks of a page that follow a line naming `configs/FILE`: (file, block).
fn config_excerpts(text: &str) -> Vec<(String, String)> {
    let mut excerpts = Vec::new();
    let mut last_named: Option<String> = None;
    let mut block: Option<(Option<String>, String)> = None;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            match block.take() {
                Some((Some(file), body)) => excerpts.push((file, body)),
                Some((None, _)) => {}
                None => block = Some((last_named.take(), String::new())),
            }
            continue;
        }
        if let Some((_, body)) = block.as_mut() {
            body.push_str(line);
            body.push('\n');
            continue;
        }
        if !line.trim().is_empty() {
            last_named = line.find("(configs/").map(|at| {
                let rest = &line[at + "(configs/".len()..];
                rest[..rest.find(')').unwrap()].to_owned()
            });
        }
    }
    excerpts
}

#[test]
fn every_config_is_tested_shown_and_quoted_exactly() {
    let mut on_disk: Vec<String> = std::fs::read_dir(guide().join("configs"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    assert_eq!(
        on_disk, CONFIGS,
        "a config file without its test (or a test without its file)"
    );
    let pages: Vec<(&str, String)> = PAGES.iter().map(|name| (*name, page(name))).collect();
    for name in CONFIGS {
        assert!(
            pages
                .iter()
                .any(|(_, text)| text.contains(&format!("(configs/{name})"))),
            "no page links configs/{name}"
        );
    }
    let mut quoted = 0;
    for (page_name, text) in &pages {
        for (file, excerpt) in config_excerpts(text) {
            let content = std::fs::read_to_string(guide().join("configs").join(&file))
                .unwrap_or_else(|e| panic!("{page_name} quotes configs/{file}: {e}"));
            let lines: Vec<&str> = content.lines().map(str::trim_end).collect();
            let wanted: Vec<&str> = excerpt.lines().map(str::trim_end).collect();
            assert!(
                lines.windows(wanted.len()).any(|w| w == wanted.as_slice()),
                "{page_name}: the block after the link to configs/{file} is not a part of it:\n{excerpt}"
            );
            quoted += 1;
        }
    }
    assert!(quoted >= CONFIGS.len(), "{quoted} excerpts");
    println!(
        "configs: {} files, {quoted} excerpts checked",
        CONFIGS.len()
    );
}
