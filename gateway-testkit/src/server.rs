//! [`TestServer`]: a server of this project, of any protocol, running on a thread of its own
//! on a free port of 127.0.0.1, for tests that talk to it over a real socket.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use gateway_core::App;
use gateway_servers::fastcgi::protocol::Settings;
use gateway_servers::runtime::{Bind, Config, Listener, Runtime, Shutdown};

/// A running server; stopped at once when dropped.
///
/// ```
/// use gateway_core::{Body, Environ, StartResponse};
/// use gateway_testkit::TestServer;
/// use std::io::{Read, Write};
///
/// let server = TestServer::http(|_: Environ, start: StartResponse| {
///     let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
///     Body::from("hi")
/// });
/// let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
/// stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
/// let mut reply = String::new();
/// stream.read_to_string(&mut reply).unwrap();
/// assert!(reply.starts_with("HTTP/1.1 200 OK") && reply.ends_with("hi"));
/// ```
#[derive(Debug)]
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Shutdown,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Runs `serve` (a protocol's `serve` with its app and settings) on a new tokio runtime
    /// with 2 worker threads, on a thread of its own. A blocking app runs on the worker pool
    /// of the `Runtime` that `serve` is given (`Config::threads`).
    pub fn start<F, Fut>(serve: F) -> TestServer
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
                .enable_all()
                .build()
                .expect("a test server's runtime");
            runtime.block_on(async move {
                let listener = Listener::bind(&Bind::Tcp(([127, 0, 0, 1], 0).into()), None)
                    .expect("a free port on 127.0.0.1");
                let _ = tx.send(listener.local_addr().expect("a TCP address"));
                serve(listener, stop).await.expect("the test server");
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        TestServer {
            addr: rx
                .recv_timeout(Duration::from_secs(10))
                .expect("the test server to start"),
            shutdown,
            thread: Some(thread),
        }
    }

    /// `app` on the built-in HTTP server, default settings.
    pub fn http(app: impl App + 'static) -> TestServer {
        TestServer::start(move |listener, stop| {
            gateway_servers::http::serve(listener, Runtime::new(app, Config::default()), stop)
        })
    }

    /// `app` on the FastCGI server, default settings.
    pub fn fastcgi(app: impl App + 'static) -> TestServer {
        TestServer::start(move |listener, stop| {
            let runtime = Runtime::new(app, Config::default());
            gateway_servers::fastcgi::server::serve(listener, runtime, stop, Settings::default())
        })
    }

    /// `app` on the uwsgi server, default settings.
    pub fn uwsgi(app: impl App + 'static) -> TestServer {
        TestServer::start(move |listener, stop| {
            let runtime = Runtime::new(app, Config::default());
            let max_vars = gateway_servers::uwsgi::codec::MAX_VARS_SIZE;
            gateway_servers::uwsgi::server::serve(listener, runtime, stop, max_vars)
        })
    }

    /// Asks for a graceful shutdown and waits for the server to finish.
    pub fn stop(&mut self) {
        self.shutdown.graceful();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
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
