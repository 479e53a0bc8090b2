//! What the server tests share: a server of any protocol running on its own runtime thread, on
//! a free port of 127.0.0.1.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use gateway_servers::runtime::{Bind, Listener, Shutdown};

/// A running server; stopped at once when dropped.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Shutdown,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Runs `serve` (a protocol's `serve` with its app and settings) on a new runtime with 2
    /// worker threads and up to `threads` blocking ones.
    pub fn start<F, Fut>(threads: usize, serve: F) -> TestServer
    where
        F: FnOnce(Listener, Shutdown) -> Fut + Send + 'static,
        Fut: Future<Output = std::io::Result<()>>,
    {
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .max_blocking_threads(threads)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener =
                    Listener::bind(&Bind::Tcp("127.0.0.1:0".parse().unwrap()), None).unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                serve(listener, stop).await.unwrap();
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        TestServer {
            addr: rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            shutdown,
            thread: Some(thread),
        }
    }

    /// Asks for a graceful shutdown and waits for the server to finish.
    pub fn stop(&mut self) {
        self.shutdown.graceful();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.immediate();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
