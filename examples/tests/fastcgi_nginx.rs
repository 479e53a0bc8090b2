//! The `echo` program on FastCGI behind real nginx (`fastcgi_pass`, from Debian's package):
//! a mount split into SCRIPT_NAME and PATH_INFO, one connection per request, and a kept-alive
//! upstream (`fastcgi_keep_conn on` with `keepalive`) — checked field by field.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Counted, ECHO, TempDir, check_front_end, check_nginx_fastcgi_reuse, free_port, start_nginx,
    wait_for,
};

/// The echo program, killed when dropped.
struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn echo_behind_nginx_fastcgi_pass() {
    let dir = TempDir::new("nginx-fastcgi");
    let (backend_port, stats) = (free_port(), free_port());
    let child = Command::new(ECHO)
        .args(["--fastcgi", &format!("127.0.0.1:{backend_port}")])
        .args(["--stats", &format!("127.0.0.1:{stats}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _backend = Backend(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", backend_port)).is_err() {
        assert!(Instant::now() < deadline, "the backend did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for(stats);

    let port = free_port();
    let location = |prefix: &str, pass: &str, keep: &str| {
        format!(
            "location {prefix}/ {{\n\
               include /etc/nginx/fastcgi_params;\n\
               fastcgi_split_path_info ^({prefix})(/.*)$;\n\
               fastcgi_param SCRIPT_NAME $fastcgi_script_name;\n\
               fastcgi_param PATH_INFO $fastcgi_path_info;\n\
               {keep}\n\
               fastcgi_pass {pass};\n\
             }}\n"
        )
    };
    let http = format!(
        "upstream kept {{ server 127.0.0.1:{backend_port}; keepalive 4; }}\n\
         server {{\n\
           listen 127.0.0.1:{port};\n\
           {plain}\n\
           {kept}\n\
         }}\n",
        plain = location("/f", &format!("127.0.0.1:{backend_port}"), ""),
        kept = location("/k", "kept", "fastcgi_keep_conn on;"),
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
}
