//! Observability as a user meets it: the `echo` program with `--stats` (scraped after known
//! traffic, every number checked) and `--access-log` (its line checked field by field). Every
//! wait is bounded.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{ECHO, Group, SLEEPY, children_of, free_port, wait_until};

/// `echo` with `--http` and `--stats` on free ports, killed with its process group when
/// dropped; its stderr is collected.
struct Server {
    group: Group,
    port: u16,
    stats_port: u16,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        Server::start_program(ECHO, args)
    }

    fn start_program(program: &str, args: &[&str]) -> Server {
        Server::start_with_env(program, args, &[])
    }

    fn start_with_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let stats_port = free_port();
        let http = format!("127.0.0.1:{port}");
        let stats = format!("127.0.0.1:{stats_port}");
        let group = Group::command(
            Command::new(program)
                .args(["--http", &http, "--stats", &stats])
                .args(args)
                .envs(env.iter().copied()),
        );
        let server = Server {
            group,
            port,
            stats_port,
        };
        // Both sockets are bound before the stats endpoint serves (a connection to the HTTP
        // port here would be counted).
        wait_until(
            "the stats endpoint answers",
            Duration::from_secs(10),
            || TcpStream::connect(("127.0.0.1", server.stats_port)).is_ok(),
        );
        server
    }

    fn log(&self) -> String {
        self.group.log()
    }

    /// `GET path` on the stats endpoint: the body.
    fn scrape(&self, path: &str) -> String {
        let reply = exchange(
            self.stats_port,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let text = String::from_utf8(reply).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
        text.split_once("\r\n\r\n").unwrap().1.to_owned()
    }

    /// The first access log line, waited for.
    fn access_line(&self) -> String {
        let mut line = None;
        wait_until("the access log line", Duration::from_secs(5), || {
            line = self
                .log()
                .lines()
                .find(|l| l.contains("gateway::access"))
                .map(str::to_owned);
            line.is_some()
        });
        line.unwrap_or_default()
    }

    /// The samples of `/metrics`, by name with labels.
    fn metrics(&self) -> HashMap<String, f64> {
        parse_metrics(&self.scrape("/metrics"))
    }
}

/// Sends `request` on a new connection and reads until the server closes it.
fn exchange(port: u16, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    reply
}

fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

#[test]
fn help_lists_the_observability_flags() {
    let output = Command::new(ECHO)
        .arg("--help")
        .env_remove("GATEWAY_INTERFACE")
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--access-log",
        "--stats <ADDR>",
        "/metrics",
        "gateway::access",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[test]
fn two_workers_count_known_traffic_exactly() {
    let server = Server::start(&[
        "--workers",
        "2",
        "--max-body-size",
        "100",
        "--max-head-size",
        "8192",
        "--header-timeout",
        "0.5",
    ]);
    let get = |i: usize| {
        format!("GET /n/{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
    };
    let mut sent_gets = 0;
    let mut received = 0;
    for i in 0..10 {
        let request = get(i);
        sent_gets += request.len();
        let reply = exchange(server.port, &request);
        assert!(reply.starts_with(b"HTTP/1.1 200 "));
        received += reply.len();
    }
    let too_large = format!(
        "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\nConnection: close\r\n\r\n{}",
        "a".repeat(200)
    );
    let reply = exchange(server.port, too_large.as_bytes());
    assert!(reply.starts_with(b"HTTP/1.1 413 "), "{reply:?}");
    received += reply.len();
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20_000)
    );
    let reply = exchange(server.port, big_head.as_bytes());
    assert!(reply.starts_with(b"HTTP/1.1 431 "), "{reply:?}");
    received += reply.len();
    let reply = exchange(server.port, b"GARBAGE\r\n\r\n");
    assert!(reply.starts_with(b"HTTP/1.1 400 "), "{reply:?}");
    received += reply.len();
    // A head that stops half-way: 408 after --header-timeout.
    let reply = exchange(server.port, b"GET /slow HTTP/1.1\r\nHost:");
    assert!(reply.starts_with(b"HTTP/1.1 408 "), "{reply:?}");
    received += reply.len();

    // The last response's record ends as its body does, maybe just after the client has it.
    let mut metrics = HashMap::new();
    wait_until("11 requests counted", Duration::from_secs(5), || {
        metrics = server.metrics();
        metrics["gateway_requests_total"] == 11.0
    });
    let at = |name: &str| metrics.get(name).copied().unwrap_or(-1.0);
    assert_eq!(at("gateway_requests_in_flight"), 0.0);
    assert_eq!(at("gateway_connections_total"), 14.0);
    assert_eq!(at("gateway_request_duration_seconds_count"), 11.0);
    assert_eq!(
        at("gateway_request_duration_seconds_bucket{le=\"+Inf\"}"),
        11.0
    );
    assert_eq!(at("gateway_limit_hits_total{limit=\"413\"}"), 1.0);
    assert_eq!(at("gateway_limit_hits_total{limit=\"431\"}"), 1.0);
    assert_eq!(at("gateway_limit_hits_total{limit=\"400\"}"), 1.0);
    assert_eq!(at("gateway_limit_hits_total{limit=\"408\"}"), 1.0);
    for limit in ["414", "503", "harakiri", "max_rss", "max_requests"] {
        assert_eq!(
            at(&format!("gateway_limit_hits_total{{limit=\"{limit}\"}}")),
            0.0,
            "{limit}"
        );
    }
    // Every byte the clients received was counted as sent, and every byte of the GETs as read.
    assert_eq!(at("gateway_sent_bytes_total"), received as f64);
    let bytes_in = at("gateway_received_bytes_total");
    assert!(bytes_in >= sent_gets as f64, "{bytes_in} < {sent_gets}");
    // One line per worker, for the master's two workers (its third child serves the stats).
    assert_eq!(at("gateway_workers"), 2.0);
    let per_worker: HashMap<u32, f64> = metrics
        .iter()
        .filter_map(|(name, value)| {
            let pid = name
                .strip_prefix("gateway_worker_requests_total{pid=\"")?
                .strip_suffix("\"}")?;
            Some((pid.parse().unwrap(), *value))
        })
        .collect();
    assert_eq!(per_worker.len(), 2, "{metrics:?}");
    let children = children_of(server.group.pid());
    assert_eq!(children.len(), 3, "two workers and the stats process");
    for pid in per_worker.keys() {
        assert!(children.contains(pid), "{pid} is not a worker");
        assert!(at(&format!("gateway_worker_resident_bytes{{pid=\"{pid}\"}}")) > 0.0);
        assert_eq!(
            at(&format!(
                "gateway_worker_requests_in_flight{{pid=\"{pid}\"}}"
            )),
            0.0
        );
    }
    assert_eq!(per_worker.values().sum::<f64>(), 11.0);
    let json = server.scrape("/stats.json");
    assert!(json.contains("\"requests\":11,"), "{json}");
    assert!(
        !server.log().contains("gateway::access"),
        "no access log without --access-log"
    );

    // A worker killed: its counts stay in the totals, and its replacement gets a line.
    let victim = *per_worker.keys().next().unwrap();
    Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    wait_until("a replacement worker", Duration::from_secs(10), || {
        let m = server.metrics();
        m["gateway_workers"] == 2.0
            && !m.contains_key(&format!(
                "gateway_worker_requests_total{{pid=\"{victim}\"}}"
            ))
    });
    let metrics = server.metrics();
    assert_eq!(metrics["gateway_requests_total"], 11.0);
    assert_eq!(metrics["gateway_limit_hits_total{limit=\"413\"}"], 1.0);
}

#[test]
fn access_log_has_the_combined_format_duration_and_pid() {
    let server = Server::start(&["--access-log"]);
    let request = "GET /a/b?c=d HTTP/1.1\r\nHost: x\r\nReferer: http://ref.example/\r\n\
                   User-Agent: tester/1.0\r\nConnection: close\r\n\r\n";
    let reply = exchange(server.port, request.as_bytes());
    let text = String::from_utf8(reply).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "));
    let pid = server.group.pid();
    let line = server.access_line();
    let entry = line.split_once("gateway::access: ").unwrap().1;
    let (start, rest) = entry.split_once(" [").unwrap();
    assert_eq!(start, "127.0.0.1 - -");
    let (time, rest) = rest.split_once("] ").unwrap();
    assert!(time.ends_with(" +0000") && time.len() == 26, "{time}");
    let expected = format!(
        "\"GET /a/b?c=d HTTP/1.1\" 200 {} \"http://ref.example/\" \"tester/1.0\" ",
        body.len()
    );
    let tail = rest
        .strip_prefix(&expected)
        .unwrap_or_else(|| panic!("{rest:?} does not start with {expected:?}"));
    let (duration, logged_pid) = tail.split_once(' ').unwrap();
    let duration: f64 = duration.parse().unwrap();
    assert!((0.0..10.0).contains(&duration), "{duration}");
    assert_eq!(logged_pid.trim(), pid.to_string());
    // One process: it serves the stats itself, with its own line.
    let metrics = server.metrics();
    assert_eq!(metrics["gateway_workers"], 1.0);
    assert_eq!(
        metrics[&format!("gateway_worker_requests_total{{pid=\"{pid}\"}}")],
        1.0
    );
}

/// The value of a sample of `/metrics`, or -1 when missing.
fn sample(metrics: &HashMap<String, f64>, name: &str) -> f64 {
    metrics.get(name).copied().unwrap_or(-1.0)
}

#[test]
fn recycles_and_harakiri_kills_are_counted_across_worker_exits() {
    let server = Server::start_program(
        SLEEPY,
        &["--workers", "1", "--max-requests", "3", "--harakiri", "1"],
    );
    for i in 0..3 {
        let reply = exchange(
            server.port,
            format!("GET /r/{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(reply.starts_with(b"HTTP/1.1 200 "));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("master: worker exited") {
        // The log says where a slow retirement stands.
        assert!(
            Instant::now() < deadline,
            "the recycled worker not replaced in time; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A request whose app blocks for 30 s: harakiri kills its worker.
    let mut stuck = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stuck
        .write_all(b"GET /sleep/30 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // The master reports the kill after it has released the killed worker's counters: until
    // then that worker still shows, with its request in flight.
    wait_until(
        "the master's report of the kill",
        Duration::from_secs(10),
        || server.log().contains("status=signal: 9 (SIGKILL)"),
    );
    let mut metrics = HashMap::new();
    wait_until("a harakiri counted", Duration::from_secs(10), || {
        metrics = server.metrics();
        sample(&metrics, "gateway_limit_hits_total{limit=\"harakiri\"}") == 1.0
            && sample(&metrics, "gateway_workers") == 1.0
    });
    assert_eq!(
        sample(&metrics, "gateway_limit_hits_total{limit=\"max_requests\"}"),
        1.0
    );
    // The killed request never finished: not served, and no longer in flight.
    assert_eq!(sample(&metrics, "gateway_requests_total"), 3.0);
    assert_eq!(sample(&metrics, "gateway_requests_in_flight"), 0.0);
    drop(stuck);

    let server = Server::start(&["--workers", "1", "--max-rss", "1"]);
    wait_until("two max-rss recycles", Duration::from_secs(10), || {
        sample(
            &server.metrics(),
            "gateway_limit_hits_total{limit=\"max_rss\"}",
        ) >= 2.0
    });
}

#[test]
fn a_client_gone_while_its_short_body_is_read_is_counted_and_logged() {
    // A body of 1,000 bytes is read whole before the (blocking) app is called; the client
    // sends ten of them and goes away, so the app never runs: the server's 400 is what the
    // request got, and it is logged and counted like any other.
    let server = Server::start(&["--access-log"]);
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .write_all(b"POST /gone HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        .unwrap();
    drop(stream);
    let line = server.access_line();
    assert!(line.contains("\"POST /gone HTTP/1.1\" 400 "), "{line}");
    let metrics = server.metrics();
    assert_eq!(metrics["gateway_requests_total"], 1.0);
    assert_eq!(metrics["gateway_requests_in_flight"], 0.0);
}

#[test]
fn the_log_is_plain_text_on_a_pipe_and_json_lines_with_log_format_json() {
    // Text: the log goes to a pipe, so it has no color codes (NO_COLOR is not set).
    let server = Server::start(&["--access-log"]);
    assert!(std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()));
    exchange(
        server.port,
        b"GET /t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let line = server.access_line();
    assert!(line.contains("\"GET /t HTTP/1.1\" 200 "), "{line}");
    assert!(!server.log().contains('\u{1b}'), "{:?}", server.log());

    // JSON: every line is one object; the access line's message is the Combined Log Format,
    // and an event's fields are there beside it.
    let server = Server::start(&["--access-log", "--log-format", "json"]);
    exchange(
        server.port,
        b"GET /j HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    server.access_line();
    let events: Vec<serde_json::Value> = server
        .log()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect();
    let access = events
        .iter()
        .find(|e| e["target"] == "gateway::access")
        .unwrap();
    assert_eq!(access["level"], "INFO");
    let message = access["message"].as_str().unwrap();
    assert!(message.starts_with("127.0.0.1 - - ["), "{message}");
    assert!(message.contains("\"GET /j HTTP/1.1\" 200 "), "{message}");
    assert!(access["timestamp"].as_str().unwrap().ends_with('Z'));
    let serving = events
        .iter()
        .find(|e| e["message"] == "serving HTTP")
        .unwrap();
    assert_eq!(
        serving["address"],
        format!("127.0.0.1:{}", server.port).as_str()
    );

    // An app's panic: a 500 for that request, and one JSON event with where it happened, not
    // Rust's report in plain text; with a backtrace in a field when one is asked for.
    for backtrace in ["0", "1"] {
        let server = Server::start_with_env(
            SLEEPY,
            &["--log-format", "json", "--threads", "1"],
            &[
                ("RUST_BACKTRACE", backtrace),
                ("RUST_LIB_BACKTRACE", backtrace),
            ],
        );
        let reply = exchange(
            server.port,
            b"GET /panic HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 500 "), "{reply}");
        // The one worker thread carries on.
        let reply = exchange(
            server.port,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(String::from_utf8_lossy(&reply).ends_with("awake\n"));
        wait_until("the panic logged", Duration::from_secs(10), || {
            server.log().contains("gateway::panic")
        });
        let events: Vec<serde_json::Value> = server
            .log()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
            .collect();
        let panic = events
            .iter()
            .find(|e| e["target"] == "gateway::panic")
            .unwrap();
        assert_eq!(panic["level"], "ERROR");
        assert_eq!(panic["message"], "panicked: sleepy was asked to panic");
        assert_eq!(panic["thread"], "gateway-app");
        assert!(
            panic["location"].as_str().unwrap().contains("sleepy.rs:"),
            "{panic}"
        );
        assert_eq!(
            panic.get("backtrace").is_some(),
            backtrace == "1",
            "{panic}"
        );
    }
}
