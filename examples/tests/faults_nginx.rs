//! Faults behind real nginx (Debian's): the `echo` program with a master and two workers, on
//! HTTP (`proxy_pass`) and FastCGI (`fastcgi_pass`), under steady GET load through nginx, while
//! its workers are killed with SIGKILL one after another. The backend is listed twice in the
//! upstream (`max_fails=0`, so neither entry is ever marked down), so `proxy_next_upstream
//! error timeout` / `fastcgi_next_upstream error timeout` has a second try: it reaches the same
//! listening socket, which the master holds, and a surviving (or replacement) worker answers.
//! No failed request may reach a client, and nginx must have seen the failures (its error log).
//! nginx keeps no connection to the backend alive (its default), so each try is a new
//! connection, which only a live worker accepts.
//! Bounded: each run loads for about four seconds (up to twelve when the first kills find their
//! workers idle).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{ECHO, Group, TempDir, children_of, free_port, start_nginx, wait_until};

/// One GET through nginx: the status line, or what went wrong.
fn get(port: u16, n: usize) -> Result<(), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!("GET /load/{n}?n={n} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&reply);
    // The echo app's JSON names the path it saw: the whole answer came through.
    if text.starts_with("HTTP/1.1 200 ") && text.contains(&format!("/load/{n}")) {
        Ok(())
    } else {
        Err(text.lines().next().unwrap_or("(nothing)").to_owned())
    }
}

/// Runs `clients` threads of GETs through nginx on `port` while workers of `master` are
/// killed, 500 ms apart: at least `kills`, and more (up to `MAX_KILLS`) until `hit()` says a
/// kill hit a request in flight (on a loaded machine a kill may find its worker idle). Returns
/// (answered, failures, workers killed).
fn load_while_killing(
    port: u16,
    master: &Group,
    clients: usize,
    kills: usize,
    hit: impl Fn() -> bool,
) -> (usize, Vec<String>, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let (stop, answered, failures) = (stop.clone(), answered.clone(), failures.clone());
            std::thread::spawn(move || {
                let mut n = t * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    match get(port, n) {
                        Ok(()) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => failures.lock().unwrap().push(error),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut killed = 0;
    while killed < kills || (killed < MAX_KILLS && !hit()) {
        killed += 1;
        let workers = children_of(master.pid());
        assert_eq!(workers.len(), 2, "two workers before a kill");
        let victim = *workers.iter().min().unwrap();
        std::process::Command::new("kill")
            .args(["-KILL", &victim.to_string()])
            .status()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        wait_until("a replacement worker", Duration::from_secs(5), || {
            let now = children_of(master.pid());
            now.len() == 2 && !now.contains(&victim)
        });
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    (answered.load(Ordering::Relaxed), failures, killed)
}

/// Lines of nginx's error log about a failed upstream attempt.
fn upstream_errors(dir: &TempDir) -> usize {
    std::fs::read_to_string(dir.0.join("error.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("upstream"))
        .count()
}

/// Workers killed per run, at least.
const KILLS: usize = 5;

/// Workers killed per run, at most, when the first kills hit no request in flight.
const MAX_KILLS: usize = 15;

fn run(protocol: &str) {
    let dir = TempDir::new(&format!("faults-nginx-{protocol}"));
    let backend = free_port();
    let address = format!("127.0.0.1:{backend}");
    let master = Group::spawn(
        ECHO,
        &[&format!("--{protocol}"), &address, "--workers", "2"],
    );
    wait_until("two workers", Duration::from_secs(10), || {
        children_of(master.pid()).len() == 2
    });
    let port = free_port();
    let (pass, retry) = match protocol {
        "http" => (
            "proxy_pass http://backend;\n\
             proxy_next_upstream error timeout;",
            "proxy_next_upstream_tries 3;",
        ),
        _ => (
            "include /etc/nginx/fastcgi_params;\n\
             fastcgi_pass backend;\n\
             fastcgi_next_upstream error timeout;",
            "fastcgi_next_upstream_tries 3;",
        ),
    };
    // The same backend twice, never marked down: a failed try has a second entry to go to,
    // on a new connection (no upstream keepalive: with it, the second try may take another
    // cached connection of the same dead worker before nginx has seen it close, and a 502
    // reaches the client; one entry per cached connection would be needed).
    let http = format!(
        "upstream backend {{\n\
           server {address} max_fails=0;\n\
           server {address} max_fails=0;\n\
         }}\n\
         server {{\n\
           listen 127.0.0.1:{port};\n\
           location / {{\n\
             {pass}\n\
             {retry}\n\
           }}\n\
         }}"
    );
    let _nginx = start_nginx(&dir.0, port, &http);
    get(port, 0).unwrap();
    let (answered, failures, killed) =
        load_while_killing(port, &master, 6, KILLS, || upstream_errors(&dir) > 0);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed at the client: {:?}",
        failures.len(),
        answered + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(answered >= 40, "only {answered} requests answered");
    let log = master.log();
    assert_eq!(
        log.matches("master: worker died; replacing it").count(),
        killed,
        "{log}"
    );
    let met = upstream_errors(&dir);
    eprintln!("nginx met {met} failed upstream attempts; {answered} requests answered");
    assert!(
        met > 0,
        "nginx met no failed upstream attempt: the kills hit nothing in flight"
    );
}

#[test]
fn sigkilled_workers_behind_nginx_proxy_next_upstream_fail_no_client_request() {
    run("http");
}

#[test]
fn sigkilled_workers_behind_nginx_fastcgi_next_upstream_fail_no_client_request() {
    run("fastcgi");
}
