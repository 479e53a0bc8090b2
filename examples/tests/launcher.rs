//! The launcher, as a user meets it: the `hello` and `echo` programs started as processes,
//! their flags, the default address, signals, and an inherited listening socket.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ECHO, free_port, http_get, wait_for};

const HELLO: &str = env!("CARGO_BIN_EXE_hello");

/// A program that is killed when dropped, whatever happened.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `program` (`echo` or `hello`) serving HTTP on a free port with `flags` besides, once it
/// answers.
fn serve(program: &str, flags: &[&str]) -> (Running, u16) {
    let port = free_port();
    let child = Command::new(program)
        .args(["--http", &format!("127.0.0.1:{port}")])
        .args(flags)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = Running(child);
    wait_for(port);
    (running, port)
}

fn get(port: u16, path: &str) -> String {
    String::from_utf8_lossy(&http_get(port, path)).into_owned()
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_flags_are_one_line_and_exit_2() {
    for args in [
        &["--http", "nowhere"][..],
        &["--threads", "many"],
        &["--no-such-flag"],
        &["--http", "fd:5", "--uwsgi", "fd:5"],
    ] {
        let output = Command::new(HELLO)
            .args(args)
            .env_remove("GATEWAY_INTERFACE")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
    // A missing argument is named on the one line.
    let output = Command::new(env!("CARGO_BIN_EXE_balancer"))
        .args(["--http", "127.0.0.1:1"])
        .env_remove("GATEWAY_INTERFACE")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--backend"), "{stderr}");
    let help = Command::new(HELLO).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--http",
        "--fastcgi",
        "--uwsgi",
        "--threads",
        "--max-body-size",
        "--header-timeout",
    ] {
        assert!(text.contains(flag), "--help lists {flag}");
    }
    let output = Command::new(ECHO)
        .args(["--fastcgi-roles", "janitor"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    // Values that would overflow the clock or ask hyper for gigabytes per request.
    for flags in [
        ["--header-timeout", "1e19"],
        ["--send-timeout", "1e10"],
        ["--max-headers", "1000000000"],
        ["--max-headers", "0"],
    ] {
        let output = Command::new(ECHO).args(flags).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(flags[0]), "{flags:?}: {stderr}");
    }
}

#[test]
fn serves_on_the_given_address_and_stops_on_sigterm_after_in_flight_requests() {
    let (mut running, port) = serve(ECHO, &["--shutdown-timeout", "10"]);
    let reply = get(port, "/hello?x=1");
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.contains("\"QUERY_STRING\":\"x=1\""), "{reply}");

    // A streaming request in flight when TERM arrives still completes.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /stream/2000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 1024];
    stream.read_exact(&mut first).unwrap();
    signal(&running.0, "TERM");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    let all: Vec<u8> = first.iter().chain(&rest).copied().collect();
    let head_end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    // Chunk-size lines are hexadecimal digits: no `x` in them.
    let x_count = all[head_end..].iter().filter(|&&b| b == b'x').count();
    assert_eq!(x_count, 2_000_000, "the whole stream arrived");
    let status = wait_exit(&mut running.0, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn a_non_blocking_echo_fails_a_body_it_would_wait_for_and_still_stops() {
    // `echo` reads its body synchronously: with `--non-blocking` and no body buffer, the read
    // on the event loop would wait for bytes only that loop can deliver.
    let (mut running, port) = serve(
        ECHO,
        &[
            "--non-blocking",
            "--body-buffer-size",
            "0",
            "--shutdown-timeout",
            "10",
        ],
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 500");
    // The server goes on answering, and stops when told to.
    let reply = get(port, "/hello");
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    drop(stream);
    signal(&running.0, "TERM");
    let status = wait_exit(&mut running.0, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_second_signal_stops_at_once() {
    let (mut running, port) = serve(ECHO, &["--shutdown-timeout", "60"]);
    // A request that would take minutes keeps the graceful shutdown waiting.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /stream/100000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut some = [0u8; 1024];
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.read_exact(&mut some).unwrap();
    signal(&running.0, "TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        running.0.try_wait().unwrap().is_none(),
        "still finishing the request"
    );
    signal(&running.0, "INT");
    wait_exit(&mut running.0, Duration::from_secs(10));
}

#[test]
fn with_no_address_it_serves_http_on_port_8000_and_says_so() {
    if TcpStream::connect("127.0.0.1:8000").is_ok() {
        // Something else holds the port on this machine: the launcher's own error is tested.
        let output = Command::new(HELLO).output().unwrap();
        assert!(!output.status.success());
        return;
    }
    let child = Command::new(HELLO).stderr(Stdio::piped()).spawn().unwrap();
    let mut running = Running(child);
    wait_for(8000);
    assert!(get(8000, "/").ends_with("Hello, world!\n"));
    signal(&running.0, "TERM");
    wait_exit(&mut running.0, Duration::from_secs(10));
    let mut stderr = String::new();
    running
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("http://127.0.0.1:8000/"), "{stderr}");
}

#[test]
fn serves_on_a_unix_socket() {
    let path = std::env::temp_dir().join(format!("gateway-launcher-{}.sock", std::process::id()));
    let child = Command::new(HELLO)
        .args([
            "--http",
            &format!("unix:{}", path.display()),
            "--socket-mode",
            "600",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut stream = loop {
        if let Ok(stream) = std::os::unix::net::UnixStream::connect(&path) {
            break stream;
        }
        assert!(Instant::now() < deadline, "no socket at {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.ends_with("Hello, world!\n"), "{reply}");
}

/// Starts `hello` the way systemd or a supervisor does: a listening socket bound by the parent
/// (here a Python one-liner), passed as fd 3, then `exec`. Returns the program and its port.
fn start_with_inherited_socket(flag: &str, systemd: bool) -> (Running, u16) {
    let script = format!(
        "import os, socket, sys\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(16)\n\
         print(s.getsockname()[1], flush=True)\n\
         os.dup2(s.fileno(), 3); os.set_inheritable(3, True)\n\
         if {systemd}:\n    os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_PID'] = str(os.getpid())\n\
         os.execv('{HELLO}', ['{HELLO}', '--http', '{flag}'])\n",
        systemd = if systemd { "True" } else { "False" },
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0] as char);
    }
    (Running(child), line.trim().parse().expect("the port"))
}

#[test]
fn serves_on_an_inherited_socket_and_on_systemd_activation() {
    let (_running, port) = start_with_inherited_socket("fd:3", false);
    wait_for(port);
    assert!(get(port, "/").ends_with("Hello, world!\n"));

    let (_running, port) = start_with_inherited_socket("systemd", true);
    wait_for(port);
    assert!(get(port, "/").ends_with("Hello, world!\n"));
}

#[test]
fn routing_mounts_echo_twice_and_static_files() {
    let routing = env!("CARGO_BIN_EXE_routing");
    let port = free_port();
    let child = Command::new(routing)
        .args(["--http", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _running = Running(child);
    wait_for(port);
    let api = get(port, "/api/users/7?x=1");
    assert!(api.starts_with("HTTP/1.1 200 OK\r\n"), "{api}");
    assert!(api.contains("\"SCRIPT_NAME\":\"/api\""), "{api}");
    assert!(api.contains("\"PATH_INFO\":\"/users/7\""), "{api}");
    let legacy = get(port, "/legacy/app/z");
    assert!(
        legacy.contains("\"SCRIPT_NAME\":\"/legacy/app\""),
        "{legacy}"
    );
    assert!(legacy.contains("\"PATH_INFO\":\"/z\""), "{legacy}");
    let file = get(port, "/static/hello.txt");
    assert!(file.starts_with("HTTP/1.1 200 OK\r\n"), "{file}");
    assert!(file.ends_with("hello from a static file\n"), "{file}");
    assert!(get(port, "/static/").contains("<h1>Static files</h1>"));
    assert!(get(port, "/elsewhere").starts_with("HTTP/1.1 404 "));
    assert!(get(port, "/static/../Cargo.toml").starts_with("HTTP/1.1 404 "));
}

/// The name and scheduling policy (`/proc`'s number: 0 the default, 3 `SCHED_BATCH`) of each
/// thread of process `pid`, once every thread but the main one has its own name: a thread
/// bears its creator's name until it sets its own, and on a busy machine one of the runtime's
/// threads may not have run yet (seen as a second `hello`).
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let main_name = |threads: &[(u32, String, u32)]| -> String {
        let main = threads.iter().find(|(tid, ..)| *tid == pid);
        main.map(|(_, name, _)| name.clone()).unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let threads = threads_of(pid);
        let name = main_name(&threads);
        let unnamed = threads.iter().any(|(tid, n, _)| *tid != pid && *n == name);
        if !unnamed || Instant::now() > deadline {
            return threads.into_iter().map(|(_, n, p)| (n, p)).collect();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The id, name and scheduling policy of each thread of process `pid`.
fn threads_of(pid: u32) -> Vec<(u32, String, u32)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap();
        let tid = task.file_name().to_str().unwrap().parse().unwrap();
        // A thread that ended since the listing has no stat left.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (open, close) = (stat.find('(').unwrap(), stat.rfind(')').unwrap());
        let name = stat[open + 1..close].to_owned();
        // Fields from the third (the state) on; the policy is the 41st.
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        threads.push((tid, name, fields[41 - 3].parse().unwrap()));
    }
    threads
}

#[test]
fn the_event_loop_runs_under_sched_batch_unless_told_not_to() {
    for (flags, event_loop) in [(&[][..], 3), (&["--no-batch-scheduling"][..], 0)] {
        let (running, port) = serve(HELLO, flags);
        // A request starts a thread of the worker pool too.
        assert!(get(port, "/").ends_with("Hello, world!\n"));
        let threads = thread_policies(running.0.id());
        let of = |name: &str| -> Vec<u32> {
            let found = threads.iter().filter(|(n, _)| n == name);
            found.map(|(_, policy)| *policy).collect()
        };
        assert!(!of("gateway").is_empty(), "{threads:?}");
        assert!(
            of("gateway").iter().all(|p| *p == event_loop),
            "{threads:?}"
        );
        // One pool thread, or two if the first was slow to start (the pool's watcher).
        assert!(!of("gateway-app").is_empty(), "{threads:?}");
        assert!(of("gateway-app").iter().all(|p| *p == 0), "{threads:?}");
        assert_eq!(of("hello"), [0], "{threads:?}");
    }
}

#[test]
fn serves_https_with_tls_cert_and_tls_key_with_client_certificates_too_and_refuses_a_bad_key_in_one_line()
 {
    let dir = std::env::temp_dir().join(format!("gateway-launcher-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());

    let (_running, port) = serve(ECHO, &["--tls-cert", cert, "--tls-key", key]);
    let output = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "--cacert",
            cert,
            "-w",
            "\n%{http_version}",
        ])
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .arg(format!("https://localhost:{port}/tls"))
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let (json, version) = text.rsplit_once('\n').unwrap();
    // ALPN chose HTTP/2.
    assert_eq!(version, "2", "{text}");
    let answer: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(answer["environ"]["HTTPS"], "on", "{answer}");
    assert_eq!(answer["environ"]["wsgi.url_scheme"], "https", "{answer}");
    assert_eq!(answer["environ"]["PATH_INFO"], "/tls", "{answer}");

    // Client certificates from an authority in --tls-client-ca: required, or optional.
    let (ca, client, client_key_file) = common::client_certificate_files(&dir);
    let ca = ca.to_str().unwrap();
    // The environ's SSL_CLIENT_VERIFY, with the client's certificate or without: `None` when
    // the request fails.
    let verify = |port: u16, with_certificate: bool| {
        let mut curl = Command::new("curl");
        curl.args(["-sf", "--max-time", "10", "--cacert", cert])
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")]);
        if with_certificate {
            curl.arg("--cert")
                .arg(&client)
                .arg("--key")
                .arg(&client_key_file);
        }
        let output = curl
            .arg(format!("https://localhost:{port}/"))
            .output()
            .unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        let environ = &answer["environ"];
        if with_certificate {
            let pem = environ["SSL_CLIENT_CERT"].as_str().unwrap();
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
        }
        Some(environ["SSL_CLIENT_VERIFY"].as_str().unwrap().to_owned())
    };
    let tls = ["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", ca];
    let (_running, port) = serve(ECHO, &tls);
    assert_eq!(verify(port, true).as_deref(), Some("SUCCESS"));
    assert_eq!(verify(port, false), None);
    let optional = [&tls[..], &["--tls-client-optional"]].concat();
    let (_running, port) = serve(ECHO, &optional);
    assert_eq!(verify(port, true).as_deref(), Some("SUCCESS"));
    assert_eq!(verify(port, false).as_deref(), Some("NONE"));
    // --tls-client-optional alone is a usage error.
    let output = Command::new(ECHO)
        .args(["--http", "127.0.0.1:1", "--tls-client-optional"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));

    // The key of another certificate: one line, exit 2.
    let other = rcgen::generate_simple_self_signed(vec!["other".to_owned()]).unwrap();
    let other_key = dir.join("other.pem");
    std::fs::write(&other_key, other.signing_key.serialize_pem()).unwrap();
    let output = Command::new(ECHO)
        .args(["--http", "127.0.0.1:1", "--tls-cert", cert, "--tls-key"])
        .arg(&other_key)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("does not fit"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
