//! Worker processes (`--workers`), as a user meets them: the `echo` program started with a
//! master and workers on loopback, its workers told apart by the kernel (which process holds
//! the server side of a connection, from `/proc`), and the master driven by signals, under
//! load. Every wait is bounded.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod common;

use common::{ECHO, Group, SLEEPY, children_of, free_port, wait_until};

/// The echo program as a master, killed (with its process group) when dropped.
struct Server {
    group: Group,
    port: u16,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        Server::start_program(ECHO, args)
    }

    fn start_program(program: &str, args: &[&str]) -> Server {
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let mut all = vec!["--http", &address];
        all.extend_from_slice(args);
        let server = Server::spawn(Command::new(program).args(&all), port);
        server.wait_serving();
        server
    }

    fn spawn(command: &mut Command, port: u16) -> Server {
        Server {
            group: Group::command(command),
            port,
        }
    }

    fn wait_serving(&self) {
        wait_until("the server answers", Duration::from_secs(10), || {
            request(self.port).is_ok()
        });
    }

    fn pid(&self) -> u32 {
        self.group.pid()
    }

    fn log(&self) -> String {
        self.group.log()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The worker processes (children that have not exited).
    fn workers(&self) -> HashSet<u32> {
        children_of(self.pid())
    }

    fn wait_workers(&self, count: usize) -> HashSet<u32> {
        let mut workers = HashSet::new();
        wait_until(&format!("{count} workers"), Duration::from_secs(10), || {
            workers = self.workers();
            workers.len() == count
        });
        workers
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.group.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the master did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The process among `candidates` that holds the server side of `client`, a connection to
/// `port` on 127.0.0.1 (see [`served_by_each`]).
fn served_by(client: &TcpStream, port: u16, candidates: &HashSet<u32>) -> Option<u32> {
    served_by_each(std::slice::from_ref(client), port, candidates)[0]
}

/// For each of `clients`, connections to `port` on 127.0.0.1, the process among `candidates`
/// that holds its server side: the socket's inode from `/proc/net/tcp`, then the process whose
/// file descriptors include it.
fn served_by_each(clients: &[TcpStream], port: u16, candidates: &HashSet<u32>) -> Vec<Option<u32>> {
    let local = format!("0100007F:{port:04X}");
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    // Remote address of a server-side socket -> its inode.
    let inodes: std::collections::HashMap<String, String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&local.as_str()))
                .then(|| Some((fields.get(2)?.to_string(), fields.get(9)?.to_string())))
                .flatten()
        })
        .collect();
    // Socket inode -> the process holding it.
    let mut holders = std::collections::HashMap::new();
    for &pid in candidates {
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                let link = link.to_string_lossy().into_owned();
                if let Some(inode) = link
                    .strip_prefix("socket:[")
                    .and_then(|l| l.strip_suffix(']'))
                {
                    holders.insert(inode.to_owned(), pid);
                }
            }
        }
    }
    clients
        .iter()
        .map(|client| {
            let remote = format!("0100007F:{:04X}", client.local_addr().unwrap().port());
            holders.get(inodes.get(&remote)?).copied()
        })
        .collect()
}

/// One request on a new connection: `Ok` for a 200 with the whole JSON body.
fn request(port: u16) -> Result<(), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /load HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    // A whole answer: echo's JSON, or sleepy's word.
    if text.starts_with("HTTP/1.1 200") && (text.ends_with('}') || text.ends_with("awake\n")) {
        Ok(())
    } else {
        Err(format!("unexpected answer: {text:?}"))
    }
}

/// A keep-alive request on `stream`, its answer read by its Content-Length.
fn request_on(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /keep HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed early");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            });
            if length.is_some_and(|n| body.len() >= n) {
                return text;
            }
        }
    }
}

/// A request's outcome under load.
#[derive(Debug)]
struct Outcome {
    started: Instant,
    result: Result<(), String>,
}

/// Clients sending requests one after another, each on a new connection, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Outcome>>>,
}

impl Load {
    fn start(port: u16, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut outcomes = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let result = request(port);
                        outcomes.push(Outcome { started, result });
                    }
                    outcomes
                })
            })
            .collect();
        Load { stop, threads }
    }

    fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    }
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[test]
fn help_lists_the_worker_flags() {
    let help = Command::new(ECHO).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--workers",
        "--max-requests ",
        "--max-requests-jitter",
        "--harakiri",
        "--max-rss",
        "--max-concurrent-requests",
    ] {
        assert!(text.contains(flag), "--help lists {flag}");
    }
    let output = Command::new(ECHO)
        .args(["--workers", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn two_workers_serve_on_the_socket_the_master_bound() {
    // One connection per worker at most: while a worker holds one, the next connection can
    // only be served by the other.
    let server = Server::start(&["--workers", "2", "--max-connections", "1"]);
    let workers = server.wait_workers(2);
    let mut first = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    assert!(request_on(&mut first).starts_with("HTTP/1.1 200"));
    let mut second = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    assert!(request_on(&mut second).starts_with("HTTP/1.1 200"));
    let mut everyone = workers.clone();
    everyone.insert(server.pid());
    let a = served_by(&first, server.port, &everyone).expect("a process holds the first");
    let b = served_by(&second, server.port, &everyone).expect("a process holds the second");
    assert!(
        workers.contains(&a) && workers.contains(&b),
        "{a} {b} {workers:?}"
    );
    assert_ne!(a, b, "each worker serves one connection");
    // Both keep serving their connection.
    assert!(request_on(&mut first).starts_with("HTTP/1.1 200"));
    assert!(request_on(&mut second).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_killed_worker_is_replaced_and_only_its_requests_in_flight_fail() {
    let server = Server::start(&["--workers", "2"]);
    let workers = server.wait_workers(2);
    let clients = 4;
    let load = Load::start(server.port, clients);
    std::thread::sleep(Duration::from_millis(300));
    let victim = *workers.iter().next().unwrap();
    Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    // Dead (and reaped) once it is no longer a live child.
    wait_until("the killed worker to go", Duration::from_secs(5), || {
        !server.workers().contains(&victim)
    });
    let dead = Instant::now();
    let mut now = HashSet::new();
    wait_until("a replacement", Duration::from_secs(10), || {
        now = server.workers();
        now.len() == 2 && !now.contains(&victim)
    });
    std::thread::sleep(Duration::from_millis(300));
    let outcomes = load.finish();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(
        failed.len() <= clients,
        "at most one request in flight per client: {failed:?}"
    );
    assert!(
        failed.iter().all(|o| o.started < dead),
        "only requests started before the worker died fail: {failed:?}"
    );
    let after = outcomes.iter().filter(|o| o.started > dead).count();
    assert!(after > 0, "requests were served after the kill");
    let log = server.log();
    assert!(
        log.contains(&format!("pid={victim} status=signal: 9 (SIGKILL)")),
        "{log}"
    );
}

#[test]
fn hup_under_load_replaces_every_worker_and_loses_no_request() {
    let server = Server::start(&["--workers", "2"]);
    let old = server.wait_workers(2);
    let load = Load::start(server.port, 4);
    std::thread::sleep(Duration::from_millis(300));
    server.signal("HUP");
    let hup = Instant::now();
    wait_until("new workers only", Duration::from_secs(15), || {
        let now = server.workers();
        now.len() == 2 && now.is_disjoint(&old)
    });
    std::thread::sleep(Duration::from_millis(300));
    let outcomes = load.finish();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(outcomes.iter().filter(|o| o.started > hup).count() > 10);
    let log = server.log();
    assert_eq!(count(&log, "reload: stopping an old worker"), 2, "{log}");
}

#[test]
fn term_lets_every_request_in_flight_complete() {
    let mut server = Server::start(&["--workers", "2", "--shutdown-timeout", "15"]);
    server.wait_workers(2);
    // Requests whose bodies are half sent: the app is reading them.
    let mut streams: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            stream
                .write_all(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01234")
                .unwrap();
            stream
        })
        .collect();
    let workers = server.workers();
    wait_until(
        "every connection held by a worker",
        Duration::from_secs(10),
        || {
            served_by_each(&streams, server.port, &workers)
                .iter()
                .all(Option::is_some)
        },
    );
    server.signal("TERM");
    wait_until("both workers draining", Duration::from_secs(5), || {
        count(&server.log(), "worker: SIGTERM") == 2
    });
    std::thread::sleep(Duration::from_millis(200));
    for stream in &mut streams {
        stream.write_all(b"56789").unwrap();
    }
    for stream in &mut streams {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let json: serde_json::Value =
            serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(json["body_len"], 10);
    }
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    assert!(server.workers().is_empty());
}

#[test]
fn max_requests_recycles_workers_and_fails_no_request() {
    let server = Server::start(&["--workers", "2", "--max-requests", "20"]);
    let first = server.wait_workers(2);
    for i in 0..100 {
        request(server.port).unwrap_or_else(|e| panic!("request {i}: {e}"));
    }
    let now = server.wait_workers(2);
    assert!(!first.is_subset(&now), "{first:?} {now:?}");
    let log = server.log();
    // 100 requests, at most 21 per worker (one may slip in as it stops accepting), and at
    // most 19 each in the two that serve at the end.
    assert!(count(&log, "served its --max-requests") >= 3, "{log}");
    assert!(
        count(&log, "worker retiring, starting its successor") >= 3,
        "{log}"
    );
}

#[test]
fn ttin_and_ttou_change_the_number_of_workers() {
    let server = Server::start(&["--workers", "2"]);
    let two = server.wait_workers(2);
    server.signal("TTIN");
    let three = server.wait_workers(3);
    assert!(two.is_subset(&three));
    server.signal("TTOU");
    server.wait_workers(2);
    server.signal("TTOU");
    let one = server.wait_workers(1);
    server.signal("TTOU");
    wait_until("the refusal", Duration::from_secs(5), || {
        server.log().contains("SIGTTOU ignored")
    });
    assert_eq!(server.workers(), one);
    request(server.port).unwrap();
}

#[test]
fn harakiri_kills_the_worker_of_a_stuck_request_and_logs_the_request() {
    let server = Server::start_program(SLEEPY, &["--workers", "1", "--harakiri", "1"]);
    let before = server.wait_workers(1);
    // The app blocks in its own code for 30 s.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .write_all(b"GET /sleep/30 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    // The worker dies with the connection: its end (or a reset) comes without an answer, within
    // the read timeout (the app would answer only much later).
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut response = Vec::new();
    let read = stream.read_to_end(&mut response);
    assert!(
        read.is_ok()
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "killed within the read timeout: {read:?}"
    );
    assert!(
        response.is_empty(),
        "{}",
        String::from_utf8_lossy(&response)
    );
    wait_until("the master's report", Duration::from_secs(5), || {
        server.log().contains("status=signal: 9 (SIGKILL)")
    });
    let log = server.log();
    assert!(log.contains("harakiri"), "{log}");
    assert!(log.contains("request=\"GET /sleep/30\""), "{log}");
    let after = server.wait_workers(1);
    assert!(after.is_disjoint(&before));
    request(server.port).unwrap();
}

#[test]
fn harakiri_does_not_count_the_time_the_app_waits_for_a_slow_request_body() {
    let server = Server::start(&["--workers", "1", "--harakiri", "1"]);
    let before = server.wait_workers(1);
    // 100 kB (longer than `--body-buffer-size`, so it streams to the app) in five pieces
    // 600 ms apart: the app, reading it, waits for the client for 2.4 s, past the harakiri
    // time.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 100000\r\n\r\n")
        .unwrap();
    for piece in 0..5 {
        if piece > 0 {
            std::thread::sleep(Duration::from_millis(600));
        }
        stream.write_all(&[b'u'; 20_000]).unwrap();
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.contains("\"body_len\":100000"), "{text}");
    assert!(!server.log().contains("harakiri"), "{}", server.log());
    assert_eq!(server.wait_workers(1), before, "the same worker");
}

#[test]
fn harakiri_does_not_count_the_time_a_request_waits_for_a_thread() {
    // One thread: the second of two 1.5 s requests waits 1.5 s for it, then runs 1.5 s, 3 s
    // in all, past the 2 s harakiri time; the app itself never runs that long.
    let server = Server::start_program(
        SLEEPY,
        &["--workers", "1", "--threads", "1", "--harakiri", "2"],
    );
    let before = server.wait_workers(1);
    let port = server.port;
    let requests: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                stream
                    .write_all(b"GET /sleep/1.5 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let mut response = Vec::new();
                let _ = stream.read_to_end(&mut response);
                String::from_utf8_lossy(&response).into_owned()
            })
        })
        .collect();
    for request in requests {
        let text = request.join().unwrap();
        assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
        assert!(text.ends_with("slept 1.5 s\n"), "{text}");
    }
    assert!(!server.log().contains("harakiri"), "{}", server.log());
    assert_eq!(server.wait_workers(1), before, "the same worker");
}

#[test]
fn harakiri_does_not_count_the_time_a_slow_client_takes_to_read() {
    let server = Server::start(&["--workers", "1", "--harakiri", "1"]);
    let before = server.wait_workers(1);
    // 30 MB streamed: more than the socket buffers hold, so the app's thread waits for the
    // client, which reads nothing for 2.5 s, past the harakiri time.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .write_all(b"GET /stream/30000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let body_start = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body: usize = response[body_start..]
        .split(|&b| b == b'\n')
        .filter_map(|line| std::str::from_utf8(line).ok())
        .filter(|line| line.bytes().all(|b| b == b'x' || b == b'\r'))
        .map(|line| line.trim_end().len())
        .sum();
    assert_eq!(body, 30_000_000, "the whole body, chunked");
    assert!(!server.log().contains("harakiri"), "{}", server.log());
    assert_eq!(server.wait_workers(1), before, "the same worker");
}

#[test]
fn max_rss_recycles_a_worker_gracefully() {
    // Any worker is over 1 MB: each is recycled about a second after it starts.
    let server = Server::start(&["--workers", "1", "--max-rss", "1"]);
    let before = server.wait_workers(1);
    wait_until("a recycled worker", Duration::from_secs(10), || {
        let now = server.workers();
        !now.is_empty() && now.is_disjoint(&before)
    });
    let log = server.log();
    assert!(log.contains("resident memory past --max-rss"), "{log}");
    assert!(
        log.contains("reason=\"max-rss\"") || log.contains("reason=max-rss"),
        "{log}"
    );
    request(server.port).unwrap();
}

#[test]
fn int_stops_at_once_even_with_a_request_in_flight() {
    let mut server = Server::start(&["--workers", "2", "--shutdown-timeout", "30"]);
    server.wait_workers(2);
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .write_all(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n")
        .unwrap();
    let workers = server.workers();
    wait_until("the connection held", Duration::from_secs(5), || {
        served_by(&stream, server.port, &workers).is_some()
    });
    server.signal("INT");
    // Well within the shutdown timeout (30 s) that a graceful stop would wait.
    server.wait_exit(Duration::from_secs(10));
    assert!(server.workers().is_empty());
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    assert!(response.is_empty());
}

#[test]
fn workers_serve_an_inherited_socket_and_keep_a_unix_socket_file() {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    // fd 0: a listening TCP socket, as a web server or systemd would pass it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("gateway-workers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join("echo.sock");
    let unix = format!("unix:{}", path.display());
    let mut server = Server::spawn(
        Command::new(ECHO)
            .args(["--http", "fd:0", "--http", &unix])
            .args(["--workers", "2", "--max-requests", "3"])
            .stdin(Stdio::from(OwnedFd::from(listener))),
        port,
    );
    server.wait_serving();
    server.wait_workers(2);
    for _ in 0..12 {
        request(port).unwrap();
        let mut stream = UnixStream::connect(&path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"GET /unix HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        assert!(response.starts_with(b"HTTP/1.1 200"));
    }
    // Workers came and went (24 requests, 3 each); the socket file stayed.
    assert!(count(&server.log(), "served its --max-requests") >= 4);
    assert!(path.exists());
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(10)).success());
    assert!(
        !path.exists(),
        "the master removes the socket file as it exits"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes a new self-signed certificate for `localhost` and its key over `cert` and `key`:
/// the certificate, in PEM.
fn new_certificate(cert: &std::path::Path, key: &std::path::Path) -> String {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(key, certified.signing_key.serialize_pem()).unwrap();
    std::fs::write(cert, certified.cert.pem()).unwrap();
    certified.cert.pem()
}

/// Whether an HTTPS GET to `port` succeeds when only the certificate in `trusted` is trusted.
fn https_trusting(port: u16, trusted: &std::path::Path) -> bool {
    Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "5", "--cacert"])
        .arg(trusted)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .arg(format!("https://localhost:{port}/"))
        .status()
        .unwrap()
        .success()
}

#[test]
fn hup_brings_in_a_renewed_certificate_and_a_broken_one_falls_back_to_the_first() {
    let dir = std::env::temp_dir().join(format!("gateway-workers-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (first, second) = (dir.join("first.pem"), dir.join("second.pem"));
    std::fs::write(&first, new_certificate(&cert, &key)).unwrap();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let server = Server::spawn(
        Command::new(ECHO)
            .args(["--http", &address, "--workers", "1", "--tls-cert"])
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key),
        port,
    );
    wait_until(
        "HTTPS with the first certificate",
        Duration::from_secs(10),
        || https_trusting(port, &first),
    );

    // Renewed: after a HUP the new worker serves the new certificate, and only it.
    std::fs::write(&second, new_certificate(&cert, &key)).unwrap();
    server.signal("HUP");
    wait_until(
        "HTTPS with the second certificate only",
        Duration::from_secs(15),
        || https_trusting(port, &second) && !https_trusting(port, &first),
    );

    // Broken: the new worker says so and serves the certificate the program read at start
    // (the master's), rather than fail.
    std::fs::write(&cert, "not a certificate").unwrap();
    server.signal("HUP");
    wait_until(
        "HTTPS with the first certificate only",
        Duration::from_secs(15),
        || https_trusting(port, &first) && !https_trusting(port, &second),
    );
    let log = server.log();
    assert_eq!(count(&log, "cannot read the certificate again"), 1, "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
