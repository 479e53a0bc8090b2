//! The `echo` program on FastCGI behind real nginx (Debian's package), beyond
//! `fastcgi_nginx.rs`: the mount prefix of the adapter (`--fastcgi-mount`) splitting the whole
//! path nginx sends in SCRIPT_NAME, and `fastcgi_pass unix:PATH` with and without a kept-alive
//! upstream — checked field by field.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Counted, ECHO, TempDir, check_front_end, check_nginx_fastcgi_reuse, curl, free_port,
    start_nginx,
};

/// The echo program, killed when dropped.
struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts echo with `args`, and waits until `ready` says it listens.
fn backend(args: &[&str], ready: impl Fn() -> bool) -> Backend {
    let child = Command::new(ECHO)
        .args(args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let backend = Backend(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ready() {
        assert!(Instant::now() < deadline, "the backend did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    backend
}

fn tcp_backend(args: &[&str], port: u16) -> Backend {
    let bind = format!("127.0.0.1:{port}");
    let mut all = vec!["--fastcgi", &bind];
    all.extend_from_slice(args);
    backend(&all, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
}

/// A location that passes requests to `pass` with Debian's `fastcgi_params` only: nginx then
/// sends the whole path in SCRIPT_NAME and no PATH_INFO.
fn plain_location(prefix: &str, pass: &str, extra: &str) -> String {
    format!(
        "location {prefix}/ {{\n\
           include /etc/nginx/fastcgi_params;\n\
           {extra}\n\
           fastcgi_pass {pass};\n\
         }}\n"
    )
}

#[test]
fn fastcgi_mount_splits_nginx_script_name() {
    let dir = TempDir::new("nginx-fastcgi-mount");
    let (mounted_port, unmounted_port) = (free_port(), free_port());
    let _mounted = tcp_backend(&["--fastcgi-mount", "/app"], mounted_port);
    let _unmounted = tcp_backend(&[], unmounted_port);
    let port = free_port();
    let http = format!(
        "server {{\n\
           listen 127.0.0.1:{port};\n\
           {app}\n\
           {application}\n\
           {raw}\n\
         }}\n",
        app = plain_location("/app", &format!("127.0.0.1:{mounted_port}"), ""),
        application = plain_location("/application", &format!("127.0.0.1:{mounted_port}"), ""),
        raw = plain_location("/raw", &format!("127.0.0.1:{unmounted_port}"), ""),
    );
    let server = start_nginx(&dir.0, port, &http);

    let environ = |path: &str| curl(&[&server.url(path)], None).json()["environ"].clone();
    // The brief's example: /app/x behind `location /app/` with --fastcgi-mount /app.
    let e = environ("/app/x");
    assert_eq!(
        (e["SCRIPT_NAME"].as_str(), e["PATH_INFO"].as_str()),
        (Some("/app"), Some("/x"))
    );
    assert_eq!(e["REQUEST_URI"], "/app/x");
    // Decoded, as nginx decodes SCRIPT_NAME.
    let e = environ("/app/a%20b/c");
    assert_eq!(
        (e["SCRIPT_NAME"].as_str(), e["PATH_INFO"].as_str()),
        (Some("/app"), Some("/a b/c"))
    );
    // Not under the prefix (only a name beginning like it): left as nginx sent it.
    let e = environ("/application/x");
    assert_eq!(
        (e["SCRIPT_NAME"].as_str(), e["PATH_INFO"].as_str()),
        (Some("/application/x"), Some(""))
    );
    // Without --fastcgi-mount, nginx's whole path stays in SCRIPT_NAME: the split is ours.
    let e = environ("/raw/x");
    assert_eq!(
        (e["SCRIPT_NAME"].as_str(), e["PATH_INFO"].as_str()),
        (Some("/raw/x"), Some(""))
    );

    check_front_end(&server, "/app", "/app", true, true);
}

#[test]
fn fastcgi_pass_over_a_unix_socket() {
    let dir = TempDir::new("nginx-fastcgi-unix");
    let socket = dir.0.join("echo.sock");
    let bind = format!("unix:{}", socket.display());
    // nginx's worker runs as another user than this test may: the socket is open to all.
    let ready = |path: &Path| std::os::unix::net::UnixStream::connect(path).is_ok();
    let stats = free_port();
    let _backend = backend(
        &[
            "--fastcgi",
            &bind,
            "--socket-mode",
            "666",
            "--fastcgi-mount",
            "/m",
            "--stats",
            &format!("127.0.0.1:{stats}"),
        ],
        || ready(&socket) && std::net::TcpStream::connect(("127.0.0.1", stats)).is_ok(),
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o666, "--socket-mode 666");

    let port = free_port();
    let pass = format!("unix:{}", socket.display());
    let split = |prefix: &str| {
        format!(
            "fastcgi_split_path_info ^({prefix})(/.*)$;\n\
             fastcgi_param SCRIPT_NAME $fastcgi_script_name;\n\
             fastcgi_param PATH_INFO $fastcgi_path_info;\n"
        )
    };
    let http = format!(
        "upstream kept {{ server {pass}; keepalive 4; }}\n\
         server {{\n\
           listen 127.0.0.1:{port};\n\
           {plain}\n\
           {kept}\n\
           {mounted}\n\
         }}\n",
        plain = plain_location("/f", &pass, &split("/f")),
        kept = plain_location(
            "/k",
            "kept",
            &format!("{}fastcgi_keep_conn on;", split("/k"))
        ),
        // The adapter's mount prefix over the socket, nginx not splitting.
        mounted = plain_location("/m", &pass, ""),
    );
    let server = start_nginx(&dir.0, port, &http);
    // Without keep-alive, a connection for each request (counted as it is accepted;
    // a request, as its response ends).
    let plain = Counted::during(stats, || check_front_end(&server, "/f", "/f", true, true));
    assert!(
        plain.requests > 0 && plain.connections >= plain.requests,
        "{plain:?}"
    );
    check_nginx_fastcgi_reuse(&server, stats, "/k");
    check_front_end(&server, "/m", "/m", true, true);
    // A Unix socket peer has no address: REMOTE_ADDR is the client's, from nginx.
    let e = curl(&[&server.url("/f/x")], None).json()["environ"].clone();
    assert_eq!(e["REMOTE_ADDR"], "127.0.0.1");
}
