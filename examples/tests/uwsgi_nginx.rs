//! The `echo` program on the uwsgi protocol behind real nginx (`uwsgi_pass`, from Debian's
//! package), over TCP with a mount (modifier 30 and `SCRIPT_NAME`, nginx's mount recipe) and
//! over a Unix socket at the root, checked field by field.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ECHO, TempDir, WebServer, check_front_end, free_port, start_nginx};

/// The echo program, killed when dropped.
struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_echo(address: &str) -> Backend {
    let child = Command::new(ECHO)
        .args(["--uwsgi", address, "--socket-mode", "666"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Backend(child)
}

fn wait_until(ready: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn echo_behind_nginx_uwsgi_pass() {
    let dir = TempDir::new("nginx-uwsgi");
    let backend_port = free_port();
    let socket = dir.0.join("echo.sock");
    let _tcp = start_echo(&format!("127.0.0.1:{backend_port}"));
    let _unix = start_echo(&format!("unix:{}", socket.display()));
    wait_until(
        || std::net::TcpStream::connect(("127.0.0.1", backend_port)).is_ok(),
        "the TCP backend",
    );
    wait_until(
        || std::os::unix::net::UnixStream::connect(&socket).is_ok(),
        "the Unix backend",
    );

    let (mount_port, root_port) = (free_port(), free_port());
    let http = format!(
        "server {{\n\
           listen 127.0.0.1:{mount_port};\n\
           location /u/ {{\n\
             include /etc/nginx/uwsgi_params;\n\
             uwsgi_param SCRIPT_NAME /u;\n\
             uwsgi_modifier1 30;\n\
             uwsgi_pass 127.0.0.1:{backend_port};\n\
           }}\n\
         }}\n\
         server {{\n\
           listen 127.0.0.1:{root_port};\n\
           location / {{\n\
             include /etc/nginx/uwsgi_params;\n\
             uwsgi_pass unix:{socket};\n\
           }}\n\
         }}\n",
        socket = socket.display(),
    );
    let server = start_nginx(&dir.0, mount_port, &http);
    // nginx de-chunks request bodies itself and passes CONTENT_LENGTH on.
    check_front_end(&server, "/u", "/u", true, true);
    let root_server = WebServer::attach(root_port);
    check_front_end(&root_server, "", "", true, true);
    drop(root_server);
    drop(server);
}
