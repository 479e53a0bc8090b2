//! The built-in HTTP server against a plain hyper server, side by side in one run.
//!
//! Both serve the same hello answer on 127.0.0.1 with the same tokio settings (2 worker
//! threads); a load generator in this process keeps `CONNECTIONS` keep-alive connections busy
//! for `SECONDS` seconds against each, one after the other, and reports requests per second,
//! p50 and p99 latency, and the ratios. The gateway server is measured twice: with the app on
//! the worker pool (the default, for blocking apps) and on the event loop (non-blocking apps).
//! Client and servers share this machine's cores, so the absolute numbers are low; the ratios
//! are the point. Nothing is asserted.
//!
//! `cargo bench -p gateway-servers --bench http` (`SECONDS`, `CONNECTIONS` to change the load).
#![allow(missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_core::{Body, Environ, StartResponse};
use gateway_servers::runtime::{Bind, Config, Listener, Runtime, Shutdown};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

const HELLO: &str = "Hello, world!\n";

fn hello(_: Environ, start: StartResponse) -> Body {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    let _ = start.start(StatusCode::OK, headers);
    Body::from(HELLO)
}

fn server_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(32)
        .enable_all()
        .build()
        .unwrap()
}

/// Starts the gateway server on its own runtime; returns its address and its shutdown switch.
fn start_gateway(blocking: bool) -> (SocketAddr, Shutdown, std::thread::JoinHandle<()>) {
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        server_runtime().block_on(async move {
            let listener =
                Listener::bind(&Bind::Tcp("127.0.0.1:0".parse().unwrap()), None).unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let mut config = Config::default();
            config.blocking = blocking;
            gateway_servers::http::serve(listener, Runtime::new(hello, config), stop)
                .await
                .unwrap();
        });
    });
    (rx.recv().unwrap(), shutdown, thread)
}

/// Starts a plain hyper server answering the same bytes.
fn start_hyper() -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        server_runtime().block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => accepted.unwrap(),
                    _ = &mut stop_rx => return,
                };
                let _ = stream.set_nodelay(true);
                let service = hyper::service::service_fn(|_request| async {
                    let mut response =
                        http::Response::new(Full::new(Bytes::from_static(HELLO.as_bytes())));
                    response
                        .headers_mut()
                        .insert("content-type", HeaderValue::from_static("text/plain"));
                    Ok::<_, Infallible>(response)
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    (rx.recv().unwrap(), stop_tx, thread)
}

struct Measured {
    requests: usize,
    seconds: f64,
    p50: Duration,
    p99: Duration,
}

/// `connections` keep-alive connections sending requests back to back for `seconds`.
fn load(addr: SocketAddr, connections: usize, seconds: f64) -> Measured {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..connections {
            tasks.push(tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                let _ = stream.set_nodelay(true);
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(connection);
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let request = http::Request::get("/")
                        .header("host", "localhost")
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let sent = Instant::now();
                    let response = sender.send_request(request).await.unwrap();
                    let body = response.into_body().collect().await.unwrap().to_bytes();
                    assert_eq!(body, HELLO);
                    latencies.push(sent.elapsed());
                }
                latencies
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap());
        }
        let seconds = started.elapsed().as_secs_f64();
        latencies.sort_unstable();
        let at =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        Measured {
            requests: latencies.len(),
            seconds,
            p50: at(0.50),
            p99: at(0.99),
        }
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("http: bench");
        return;
    }
    let seconds: f64 = std::env::var("SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let connections: usize = std::env::var("CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);

    let (hyper_addr, hyper_stop, hyper_thread) = start_hyper();
    let (pooled_addr, pooled_stop, pooled_thread) = start_gateway(true);
    let (direct_addr, direct_stop, direct_thread) = start_gateway(false);

    // Warm up each, then measure each.
    for addr in [hyper_addr, pooled_addr, direct_addr] {
        load(addr, connections, 1.0);
    }
    let rows = [
        ("hyper (plain)", load(hyper_addr, connections, seconds)),
        (
            "gateway, worker pool",
            load(pooled_addr, connections, seconds),
        ),
        (
            "gateway, event loop",
            load(direct_addr, connections, seconds),
        ),
    ];
    let base = rows[0].1.requests as f64 / rows[0].1.seconds;
    let base_p99 = rows[0].1.p99.as_secs_f64();
    println!(
        "hello over HTTP/1.1, {connections} keep-alive connections, {seconds} s each, on 127.0.0.1"
    );
    println!(
        "{:<24} {:>12} {:>10} {:>10} {:>10} {:>10}",
        "server", "requests/s", "p50 ms", "p99 ms", "rps ratio", "p99 ratio"
    );
    for (name, m) in &rows {
        let rps = m.requests as f64 / m.seconds;
        println!(
            "{:<24} {:>12.0} {:>10.3} {:>10.3} {:>10.2} {:>10.2}",
            name,
            rps,
            m.p50.as_secs_f64() * 1e3,
            m.p99.as_secs_f64() * 1e3,
            rps / base,
            m.p99.as_secs_f64() / base_p99
        );
    }
    println!("targets (issue 3): requests/s ratio >= 0.95, p99 ratio <= 1.10");

    let _ = hyper_stop.send(());
    pooled_stop.graceful();
    direct_stop.graceful();
    for thread in [hyper_thread, pooled_thread, direct_thread] {
        let _ = thread.join();
    }
}
