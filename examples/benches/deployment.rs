//! Two deployment measurements, side by side in one run, with ratios:
//!
//! 1. CGI: `hello` as a CGI script behind lighttpd against a C hello CGI program compiled here
//!    with the system's C compiler, both under the same lighttpd, the same sequential load of
//!    `REQUESTS` requests, reporting the time per request and the ratio (target: at most 1.1x
//!    the C program's).
//! 2. Idle connections: the resident memory the `hello` server (HTTP) gains per idle keep-alive
//!    connection with `IDLE` (5,000) of them open (target: under 10 KiB).
//!
//! Needs lighttpd and gcc (scripts/install-test-deps.sh installs lighttpd). Nothing here
//! asserts a time: `cargo bench -p examples --bench deployment`.
#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http_get, wait_for};

const HELLO: &str = env!("CARGO_BIN_EXE_hello");

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        std::thread::sleep(Duration::from_millis(200));
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request on a new connection; the whole answer.
fn get(port: u16, path: &str) -> Vec<u8> {
    http_get(port, path)
}

fn c_hello(dir: &Path) -> PathBuf {
    let source = dir.join("hello.c");
    std::fs::write(
        &source,
        "#include <stdio.h>\nint main(void) {\n  fputs(\"Status: 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: 14\\r\\n\\r\\nHello, world!\\n\", stdout);\n  return 0;\n}\n",
    )
    .unwrap();
    let binary = dir.join("c-hello.cgi");
    let status = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .expect("gcc");
    assert!(status.success());
    binary
}

fn cgi_comparison(requests: usize) {
    let dir = std::env::temp_dir().join(format!("gateway-bench-cgi-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("docroot")).unwrap();
    let c = c_hello(&dir);
    std::fs::copy(&c, dir.join("docroot/c.cgi")).unwrap();
    std::fs::copy(HELLO, dir.join("docroot/rust.cgi")).unwrap();
    let port = free_port();
    let root = dir.display();
    let config = format!(
        "server.document-root = \"{root}/docroot\"\nserver.bind = \"127.0.0.1\"\nserver.port = {port}\n\
         server.pid-file = \"{root}/l.pid\"\nserver.errorlog = \"{root}/error.log\"\n\
         server.modules = (\"mod_cgi\")\ncgi.assign = (\".cgi\" => \"\")\n"
    );
    std::fs::write(dir.join("l.conf"), config).unwrap();
    let lighttpd = Command::new("/usr/sbin/lighttpd")
        .args(["-D", "-f"])
        .arg(dir.join("l.conf"))
        .stderr(Stdio::null())
        .spawn()
        .expect("lighttpd: run scripts/install-test-deps.sh");
    let _lighttpd = Killed(lighttpd);
    wait_for(port);
    let mut per_request = Vec::new();
    for script in ["/c.cgi", "/rust.cgi"] {
        assert!(
            get(port, script).ends_with(b"Hello, world!\n"),
            "{script} answers"
        );
        for _ in 0..20 {
            get(port, script);
        }
        // Interleave rounds so that drift hits both alike; keep the best round of each.
        per_request.push(f64::MAX);
    }
    for _ in 0..5 {
        for (i, script) in ["/c.cgi", "/rust.cgi"].iter().enumerate() {
            let started = Instant::now();
            for _ in 0..requests / 5 {
                get(port, script);
            }
            let each = started.elapsed().as_secs_f64() / (requests / 5) as f64;
            per_request[i] = per_request[i].min(each);
        }
    }
    println!(
        "CGI behind lighttpd 1.4 (mod_cgi), one request at a time, best of 5 rounds of {}",
        requests / 5
    );
    println!("{:<22} {:>14} {:>8}", "program", "ms/request", "ratio");
    println!(
        "{:<22} {:>14.3} {:>8.2}",
        "C hello (gcc -O2)",
        per_request[0] * 1e3,
        1.0
    );
    println!(
        "{:<22} {:>14.3} {:>8.2}",
        "gateway hello (CGI)",
        per_request[1] * 1e3,
        per_request[1] / per_request[0]
    );
    println!("target (issue 3): ratio <= 1.10");
    let _ = std::fs::remove_dir_all(&dir);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn idle_connections(count: usize) {
    let port = free_port();
    let server = Command::new(HELLO)
        .args([
            "--http",
            &format!("127.0.0.1:{port}"),
            "--max-connections",
            "20000",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = server.id();
    let _server = Killed(server);
    wait_for(port);
    // Warm up: the worker pool and buffers the first requests allocate.
    for _ in 0..50 {
        get(port, "/");
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(pid);
    let mut open = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // One request each, so that every connection is an idle keep-alive one.
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut reply = [0u8; 512];
        let mut got = 0;
        while !reply[..got].ends_with(b"Hello, world!\n") {
            got += stream.read(&mut reply[got..]).unwrap();
        }
        open.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / count as f64;
    println!();
    println!("idle keep-alive connections to the hello server (HTTP/1.1)");
    println!("connections open: {count}; resident memory {before} KiB before, {after} KiB after");
    println!(
        "per idle connection: {:.1} KiB (target (issue 3): under 10 KiB)",
        per / 1024.0
    );
    drop(open);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("deployment: bench");
        return;
    }
    let requests: usize = std::env::var("REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let idle: usize = std::env::var("IDLE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    cgi_comparison(requests);
    idle_connections(idle);
}
