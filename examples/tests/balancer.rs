//! The `balancer` program in front of real `echo` processes: requests spread by the strategy,
//! every protocol forwarded, and no failed GET while a backend is killed and comes back.

mod common;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{
    ECHO, TempDir, WebServer, curl, free_port, get_backend, sha256_hex, spread, wait_until,
};

const BALANCER: &str = env!("CARGO_BIN_EXE_balancer");

/// An echo process speaking `protocol` (`http`, `fastcgi` or `uwsgi`) on a free port.
fn echo(protocol: &str, port: u16, dir: &TempDir) -> WebServer {
    let address = format!("127.0.0.1:{port}");
    let log = dir.0.join(format!("echo-{port}.log"));
    WebServer::start(ECHO, &[&format!("--{protocol}"), &address], port, log)
}

/// The balancer on a free port with these arguments after `--http`.
fn balancer(args: &[String], dir: &TempDir) -> WebServer {
    let port = free_port();
    let mut all = vec!["--http".to_owned(), format!("127.0.0.1:{port}")];
    all.extend_from_slice(args);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    WebServer::start(BALANCER, &all, port, dir.0.join("balancer.log"))
}

/// The port of a killed backend, held by the test so that what still reaches it is seen: each
/// connection is closed once its request head is read (the backend stays down to the
/// balancer), and counted as a health check (by the balancer's `User-Agent`) or a request.
struct DeadBackend {
    port: u16,
    requests: Arc<AtomicUsize>,
    health_checks: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DeadBackend {
    fn hold(port: u16) -> DeadBackend {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let health_checks = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, health_checks, stop) =
                (requests.clone(), health_checks.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(mut stream) = stream else {
                        continue;
                    };
                    let head = read_head(&mut stream).to_ascii_lowercase();
                    if head.contains("user-agent: gateway-health-check") {
                        health_checks.fetch_add(1, Ordering::SeqCst);
                    } else {
                        requests.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        DeadBackend {
            port,
            requests,
            health_checks,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn health_checks(&self) -> usize {
        self.health_checks.load(Ordering::SeqCst)
    }
}

impl Drop for DeadBackend {
    /// Closes the port: a connection of its own wakes the accepting thread to see `stop`.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What arrives on `stream` up to the blank line after the head (or until it ends or stalls
/// for 5 s), as text.
fn read_head(stream: &mut TcpStream) -> String {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(n @ 1..) => head.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn round_robin_over_three_echoes_survives_a_killed_backend() {
    let dir = TempDir::new("balancer-kill");
    let ports = [free_port(), free_port(), free_port()];
    let mut echoes: Vec<WebServer> = ports.iter().map(|&p| echo("http", p, &dir)).collect();
    let mut args = Vec::new();
    for port in ports {
        args.extend(["--backend".to_owned(), format!("http://127.0.0.1:{port}")]);
    }
    args.extend(
        [
            "--cool-down",
            "0.5",
            "--health",
            "/",
            "--health-interval",
            "0.2",
        ]
        .map(String::from),
    );
    let front = balancer(&args, &dir);

    // Round robin: each backend gets a third.
    let first = spread(front.port, 30, "");
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(first.values().all(|&n| n == 10), "{first:?}");

    // Steady GETs from four clients while one backend is killed and started again.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let served = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, failed, served) = (stop.clone(), failed.clone(), served.clone());
            let port = front.port;
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match get_backend(port, "/load", "") {
                        Ok((200, _)) => {
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok((status, backend)) => {
                            failed
                                .lock()
                                .unwrap()
                                .push(format!("{status} from {backend:?}"));
                        }
                        Err(error) => failed.lock().unwrap().push(error),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    echoes[1].kill();
    let dead = DeadBackend::hold(ports[1]);
    // The health thread starts a check only after the one before has ended: by the second
    // check that reaches the port, the first has failed and the backend is out.
    wait_until(
        "two health checks of the killed backend",
        Duration::from_secs(10),
        || dead.health_checks() >= 2,
    );
    // Out means out: neither these GETs (a third of them its turn) nor the load reach it.
    let reached = dead.requests();
    let down = spread(front.port, 12, "");
    assert_eq!(down.len(), 2, "{down:?}");
    assert_eq!(
        dead.requests(),
        reached,
        "requests still went to the killed backend: {down:?}"
    );
    drop(dead);
    let killed = format!("http://127.0.0.1:{}", ports[1]);
    echoes[1] = echo("http", ports[1], &dir);
    // Back in rotation once a health check (or a probe) finds it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let back = spread(front.port, 6, "");
        if back.contains_key(&killed) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backend never came back: {back:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let failed = failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} GETs failed: {:?}",
        failed.len(),
        failed.len() + served.load(Ordering::SeqCst),
        &failed[..failed.len().min(5)]
    );
    assert!(served.load(Ordering::SeqCst) > 50, "the load ran");
}

#[test]
fn every_protocol_weighted_and_bodies_forwarded() {
    let dir = TempDir::new("balancer-protocols");
    let (http, fastcgi, uwsgi) = (free_port(), free_port(), free_port());
    let _echoes = [
        echo("http", http, &dir),
        echo("fastcgi", fastcgi, &dir),
        echo("uwsgi", uwsgi, &dir),
    ];
    let args: Vec<String> = [
        "--backend".to_owned(),
        format!("http://127.0.0.1:{http},weight=2"),
        "--backend".to_owned(),
        format!("fastcgi://127.0.0.1:{fastcgi}"),
        "--backend".to_owned(),
        format!("uwsgi://127.0.0.1:{uwsgi}"),
        "--strategy".to_owned(),
        "weighted".to_owned(),
    ]
    .into();
    let front = balancer(&args, &dir);
    let spread = spread(front.port, 40, "");
    assert_eq!(
        spread[&format!("http://127.0.0.1:{http}")],
        20,
        "{spread:?}"
    );
    assert_eq!(
        spread[&format!("fastcgi://127.0.0.1:{fastcgi}")],
        10,
        "{spread:?}"
    );
    assert_eq!(
        spread[&format!("uwsgi://127.0.0.1:{uwsgi}")],
        10,
        "{spread:?}"
    );

    // A POST through each protocol: the echo sees the path, the query and the whole body.
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let fetched = curl(
            &[
                "--data-binary",
                "@-",
                "-H",
                "content-type: application/octet-stream",
                &front.url("/post/x?y=1"),
            ],
            Some(&body),
        );
        assert_eq!(fetched.status, 200);
        let json = fetched.json();
        assert_eq!(json["environ"]["PATH_INFO"], "/post/x");
        assert_eq!(json["environ"]["QUERY_STRING"], "y=1");
        assert_eq!(json["body_len"], body.len());
        assert_eq!(json["body_sha256"], sha256_hex(&body));
        seen.insert(fetched.header("x-backend").unwrap().to_owned());
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[test]
fn hashing_on_a_header_keeps_a_user_on_one_backend() {
    let dir = TempDir::new("balancer-hash");
    let ports = [free_port(), free_port(), free_port()];
    let _echoes: Vec<WebServer> = ports.iter().map(|&p| echo("http", p, &dir)).collect();
    let mut args = vec!["--strategy".to_owned(), "hash:X-User".to_owned()];
    for port in ports {
        args.extend(["--backend".to_owned(), format!("http://127.0.0.1:{port}")]);
    }
    let front = balancer(&args, &dir);
    let mut owners = std::collections::BTreeSet::new();
    for user in 0..30 {
        let header = format!("X-User: user-{user}\r\n");
        let spread = spread(front.port, 3, &header);
        assert_eq!(spread.len(), 1, "user-{user} went to {spread:?}");
        owners.extend(spread.into_keys());
    }
    assert_eq!(owners.len(), 3, "the users spread over every backend");
}
