//! Load on loopback, bounded in time: a thousand slow clients trickling their heads do not
//! delay a normal client; a storm of malformed HTTP requests, FastCGI records and uwsgi packets
//! from several threads leaves the server answering on every protocol, with its resident
//! memory flat.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{ECHO, Group, free_port, raise_nofile, vm_rss_kib, wait_until};

/// Waits until `port` accepts connections.
fn wait_port(port: u16) {
    wait_until("the server listens", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// Writes `bytes` on a new connection and reads until the server closes (at most `wait`).
fn send_and_drain(port: u16, bytes: &[u8], wait: Duration) -> Vec<u8> {
    exchange(port, bytes, wait, false)
}

/// Writes `bytes` on a new connection, ends the sending side when `half_close` (so that the
/// server does not wait for the rest of a cut request; hyper then closes without answering
/// what it has not parsed yet), and reads until the server closes (at most `wait`); errors
/// (the server may close first) are what a bad client gets.
fn exchange(port: u16, bytes: &[u8], wait: Duration, half_close: bool) -> Vec<u8> {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return Vec::new();
    };
    stream.set_read_timeout(Some(wait)).unwrap();
    let _ = stream.write_all(bytes);
    if half_close {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    reply
}

fn http_get(port: u16, path: &str) -> Vec<u8> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    send_and_drain(port, request.as_bytes(), Duration::from_secs(10))
}

fn fcgi_record(kind: u8, id: u16, content: &[u8]) -> Vec<u8> {
    let mut record = vec![1, kind];
    record.extend_from_slice(&id.to_be_bytes());
    record.extend_from_slice(&u16::try_from(content.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&[0, 0]);
    record.extend_from_slice(content);
    record
}

/// A whole FastCGI Responder request for GET `path`.
fn fcgi_request(path: &str) -> Vec<u8> {
    let mut params = Vec::new();
    for (name, value) in [
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", ""),
        ("PATH_INFO", path),
        ("QUERY_STRING", ""),
        ("SERVER_NAME", "x"),
        ("SERVER_PORT", "80"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
    ] {
        params.push(u8::try_from(name.len()).unwrap());
        params.push(u8::try_from(value.len()).unwrap());
        params.extend_from_slice(name.as_bytes());
        params.extend_from_slice(value.as_bytes());
    }
    let mut request = fcgi_record(1, 1, &[0, 1, 0, 0, 0, 0, 0, 0]);
    request.extend(fcgi_record(4, 1, &params));
    request.extend(fcgi_record(4, 1, &[]));
    request.extend(fcgi_record(5, 1, &[]));
    request
}

/// A whole uwsgi packet for GET `path`.
fn uwsgi_request(path: &str) -> Vec<u8> {
    let mut vars = Vec::new();
    for (name, value) in [
        ("REQUEST_METHOD", "GET"),
        ("PATH_INFO", path),
        ("SERVER_NAME", "x"),
        ("SERVER_PORT", "80"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
    ] {
        vars.extend_from_slice(&u16::try_from(name.len()).unwrap().to_le_bytes());
        vars.extend_from_slice(name.as_bytes());
        vars.extend_from_slice(&u16::try_from(value.len()).unwrap().to_le_bytes());
        vars.extend_from_slice(value.as_bytes());
    }
    let mut packet = vec![0];
    packet.extend_from_slice(&u16::try_from(vars.len()).unwrap().to_le_bytes());
    packet.push(0);
    packet.extend(vars);
    packet
}

/// Checks that the server answers a valid request on each protocol.
fn answers_everywhere(http: u16, fastcgi: u16, uwsgi: u16) {
    let reply = String::from_utf8_lossy(&http_get(http, "/alive")).into_owned();
    assert!(
        reply.starts_with("HTTP/1.1 200 ") && reply.contains("/alive"),
        "{reply}"
    );
    let reply = send_and_drain(fastcgi, &fcgi_request("/alive"), Duration::from_secs(10));
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.contains("/alive") && reply.windows(2).any(|w| w == [1, 3]),
        "no FastCGI answer: {text}"
    );
    let reply = send_and_drain(uwsgi, &uwsgi_request("/alive"), Duration::from_secs(10));
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.starts_with("HTTP/1.1 200 ") && text.contains("/alive"),
        "{text}"
    );
}

/// xorshift64*: the storm is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// 1 to `max` random bytes.
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = 1 + self.below(max);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One malformed HTTP request.
fn bad_http(rng: &mut Rng) -> Vec<u8> {
    match rng.below(7) {
        0 => {
            let mut bytes = rng.bytes(2000);
            bytes.extend_from_slice(b"\r\n\r\n");
            bytes
        }
        1 => b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        2 => b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n".to_vec(),
        3 => format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000)).into_bytes(),
        4 => b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nxyz".to_vec(),
        5 => {
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n".to_vec()
        }
        _ => b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\ncut short".to_vec(),
    }
}

/// One malformed FastCGI exchange.
fn bad_fastcgi(rng: &mut Rng) -> Vec<u8> {
    match rng.below(6) {
        0 => rng.bytes(2000),
        1 => {
            // A valid beginning, then garbage.
            let mut bytes = fcgi_record(1, 1, &[0, 1, 0, 0, 0, 0, 0, 0]);
            bytes.extend(rng.bytes(500));
            bytes
        }
        2 => {
            let mut record = fcgi_record(1, 1, &[0, 1, 0, 0, 0, 0, 0, 0]);
            record[0] = 2; // version 2
            record
        }
        3 => {
            // PARAMS whose pair lengths run past the record.
            let mut bytes = fcgi_record(1, 1, &[0, 1, 0, 0, 0, 0, 0, 0]);
            bytes.extend(fcgi_record(4, 1, &[0x7f, 0x7f, b'A', b'B']));
            bytes.extend(fcgi_record(4, 1, &[]));
            bytes.extend(fcgi_record(5, 1, &[]));
            bytes
        }
        4 => {
            // Records of requests never begun, and a truncated header.
            let mut bytes = fcgi_record(5, 7, b"stdin without a request");
            bytes.extend(fcgi_record(4, 9, &[3, 1, b'a', b'b', b'c', b'd']));
            bytes.extend_from_slice(&[1, 4, 0]);
            bytes
        }
        _ => {
            // A request cut in the middle of its params.
            let request = fcgi_request("/cut");
            request[..8 + 8 + 8 + rng.below(20)].to_vec()
        }
    }
}

/// One malformed uwsgi packet.
fn bad_uwsgi(rng: &mut Rng) -> Vec<u8> {
    match rng.below(5) {
        0 => rng.bytes(2000),
        1 => {
            // Vars whose lengths run past the packet.
            let mut packet = vec![0, 8, 0, 0];
            packet.extend_from_slice(&[0xff, 0x00, b'A', b'B', 0x05, 0x00, b'C', b'D']);
            packet
        }
        2 => {
            // A declared size larger than what follows, then the end.
            let mut packet = vec![0, 0xff, 0xff, 0];
            packet.extend(rng.bytes(100));
            packet
        }
        3 => {
            let mut packet = uwsgi_request("/odd");
            packet[0] = rng.next() as u8; // any modifier1
            packet
        }
        _ => {
            let packet = uwsgi_request("/cut");
            packet[..4 + rng.below(packet.len() - 4)].to_vec()
        }
    }
}

/// `count` malformed inputs per protocol, from `threads` threads.
fn storm(ports: (u16, u16, u16), threads: usize, count: usize, seed: u64) {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = Rng(seed + t as u64 * 7919 + 1);
                let wait = Duration::from_secs(5);
                for _ in 0..count / threads {
                    exchange(ports.0, &bad_http(&mut rng), wait, true);
                    exchange(ports.1, &bad_fastcgi(&mut rng), wait, true);
                    exchange(ports.2, &bad_uwsgi(&mut rng), wait, true);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
}

#[test]
fn a_storm_of_malformed_input_leaves_the_server_answering_with_flat_memory() {
    let (http, fastcgi, uwsgi) = (free_port(), free_port(), free_port());
    let stats = free_port();
    let server = Group::spawn(
        ECHO,
        &[
            "--stats",
            &format!("127.0.0.1:{stats}"),
            "--http",
            &format!("127.0.0.1:{http}"),
            "--fastcgi",
            &format!("127.0.0.1:{fastcgi}"),
            "--uwsgi",
            &format!("127.0.0.1:{uwsgi}"),
            "--threads",
            "4",
            "--header-timeout",
            "5",
        ],
    );
    for port in [http, fastcgi, uwsgi] {
        wait_port(port);
    }
    answers_everywhere(http, fastcgi, uwsgi);
    let started = Instant::now();
    // A first round brings the allocator to its working size; the next ones must not grow it.
    storm((http, fastcgi, uwsgi), 4, 600, 1);
    answers_everywhere(http, fastcgi, uwsgi);
    let before = vm_rss_kib(server.pid());
    storm((http, fastcgi, uwsgi), 4, 1200, 2);
    storm((http, fastcgi, uwsgi), 4, 1200, 3);
    answers_everywhere(http, fastcgi, uwsgi);
    let after = vm_rss_kib(server.pid());
    let elapsed = started.elapsed();
    eprintln!(
        "storm: 9000 malformed inputs in {elapsed:?}; VmRSS {before} KiB before, {after} KiB after"
    );
    assert!(
        after <= before + 4 * 1024,
        "resident memory grew from {before} KiB to {after} KiB"
    );
    let log = server.log();
    assert!(
        log.contains("bad FastCGI record"),
        "the storm reached FastCGI"
    );
    assert!(log.contains("bad uwsgi"), "the storm reached uwsgi");
    // hyper's parser saw the storm too: it answered 400 and 431.
    let metrics = String::from_utf8(send_and_drain(
        stats,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    ))
    .unwrap();
    for limit in ["400", "431"] {
        let hits: u64 = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("gateway_limit_hits_total{{limit=\"{limit}\"}} "))
            })
            .unwrap()
            .parse()
            .unwrap();
        assert!(hits > 100, "{hits} answers {limit} in the storm");
    }
}

#[test]
fn a_thousand_slow_clients_do_not_delay_a_normal_client() {
    const SLOW: usize = 1000;
    let limit = raise_nofile(4 * SLOW as u64);
    assert!(
        limit >= 2 * SLOW as u64 + 100,
        "open files limited to {limit}"
    );
    let port = free_port();
    let stats = free_port();
    let server = Group::spawn(
        ECHO,
        &[
            "--http",
            &format!("127.0.0.1:{port}"),
            "--stats",
            &format!("127.0.0.1:{stats}"),
            "--max-connections",
            "5000",
            "--threads",
            "4",
            // Longer than the normal client can run (20 requests of at most 10 s each), so the
            // slow clients trickle until it is done.
            "--header-timeout",
            "300",
        ],
    );
    wait_port(stats);
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let head = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Trickle: ";
    let (trickling_tx, trickling) = std::sync::mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    let normal_done = done.clone();
    let trickle = std::thread::spawn(move || {
        // One byte per client every 100 ms, for as long as the normal client runs.
        let mut sent = 0;
        while !normal_done.load(Ordering::SeqCst) {
            let round = Instant::now();
            let byte = head.get(sent).copied().unwrap_or(b'a');
            for stream in &mut slow {
                stream.write_all(&[byte]).unwrap();
            }
            sent += 1;
            if sent == 1 {
                // Every slow client has begun its head.
                let _ = trickling_tx.send(());
            }
            std::thread::sleep(Duration::from_millis(100).saturating_sub(round.elapsed()));
        }
        slow
    });
    trickling
        .recv_timeout(Duration::from_secs(10))
        .expect("the slow clients trickle");
    let mut latencies = Vec::new();
    for i in 0..20 {
        let start = Instant::now();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(
                format!("GET /normal/{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
        let mut reply = Vec::new();
        stream
            .read_to_end(&mut reply)
            .unwrap_or_else(|e| panic!("request {i}: no answer within 10 s: {e}"));
        latencies.push(start.elapsed());
        let text = String::from_utf8_lossy(&reply);
        assert!(
            text.starts_with("HTTP/1.1 200 ") && text.contains(&format!("/normal/{i}")),
            "request {i}: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    done.store(true, Ordering::SeqCst);
    // The slow clients were all there, connected and still trickling, the whole time.
    let slow = trickle.join().unwrap();
    let metrics = String::from_utf8(send_and_drain(
        stats,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    ))
    .unwrap();
    let connections = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gateway_connections_total "))
        .unwrap();
    assert_eq!(connections, (SLOW + 20).to_string());
    let requests = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gateway_requests_total "))
        .unwrap();
    assert_eq!(requests, "20", "no slow client finished a head");
    latencies.sort();
    eprintln!(
        "20 requests beside {SLOW} slow clients: median {:?}, slowest {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    drop(slow);
    drop(server);
}
